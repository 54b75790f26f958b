"""The file names inside loopline's artifact and model folders: a contract between the
steps that write them and the serving, monitoring and summary code that reads them."""

ERROR = "error.txt"  # a failed step's message, beside its outputs
TRAINING = "training.json"
EVALUATION = "evaluation.json"
DECISION = "decision.json"
INPUT_SCHEMA = "input_schema.json"  # the model's inputs; serving validates requests with it
REFERENCE = "reference.parquet"  # a training-data sample; monitoring's drift reference
PREDICTION = "prediction"  # a drift reference's column of the model's answers
GUARDRAIL = "guardrail.parquet"  # held-out labelled rows the gate checks for regressions
MODEL_PATH = "model"  # where a run's model files sit among its MLflow artifacts
TRIGGER = "trigger.json"  # in a retraining's dataset: the trigger that started it
TRIGGER_TAG = "loopline.trigger_id"  # on the version a retraining registered
FORMAT_TAG = "loopline.format"  # "mlflow" on a version that is a user's MLflow Model
DIGEST_TAG = "loopline.sha256"  # on every version: its registered folder's manifest digest
