"""The ticket project's own components: the split and a TF-IDF text classifier.

scikit-learn, not a ``transformers`` model: ``transformers`` is not among loopline's
dependencies, and a TF-IDF pipeline trains in a second on a CPU, so the example's whole
loop fits in the test suite. A ``transformers`` model enters the same way (an MLflow
Model with a signature whose text column is named in ``metadata.loopline.text_columns``).
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from loopline.core.images import PLATFORM_IMAGE


@dsl.component(base_image=PLATFORM_IMAGE)
def prepare(dataset: str, seed: int, train_rows: Output[Dataset], test_rows: Output[Dataset]):
    """Split labelled tickets into training and test rows.

    Args:
        dataset: A Parquet file of labelled tickets (loopline's monitor passes the
            retraining data here).
        seed: Seed of the split.
        train_rows: The rows to fit on.
        test_rows: The held-out rows: the gate judges the model on them.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from loopline.ml.retraining_data import dataset_file

    frame = pd.read_parquet(dataset_file(dataset))  # a path, or an artifact URI on Kubeflow
    train, test = train_test_split(frame, test_size=0.3, random_state=seed, stratify=frame["topic"])
    train.to_parquet(train_rows.path, index=False)
    test.to_parquet(test_rows.path, index=False)


@dsl.component(base_image=PLATFORM_IMAGE)
def train_tfidf(train_rows: Input[Dataset], model: Output[Model], max_features: int):
    """Fit TF-IDF features of the text, the channel one-hot, and a logistic regression.

    Args:
        train_rows: The rows to fit on.
        model: The MLflow Model (scikit-learn flavor, skops format), with its signature.
        max_features: Words kept by TF-IDF (5 makes a deliberately weak model).
    """
    import mlflow.sklearn
    import pandas as pd
    import skops.io
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.read_parquet(train_rows.path)
    x, y = frame[["text", "channel"]], frame["topic"]
    features = ColumnTransformer(
        [
            ("words", TfidfVectorizer(max_features=max_features), "text"),
            ("channel", OneHotEncoder(handle_unknown="ignore"), ["channel"]),
        ]
    )
    pipeline = make_pipeline(features, LogisticRegression(max_iter=1000)).fit(x, y)
    mlflow.sklearn.save_model(
        pipeline,
        model.path,
        serialization_format="skops",
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)),
        signature=infer_signature(x, pipeline.predict(x)),
        pip_requirements=["scikit-learn", "skops"],
        metadata={"loopline": {"task": "classification", "text_columns": ["text"]}},
    )
