"""The example run of ``loopline-register-model``: a data scientist's own small pipeline.

A scikit-learn classifier on the embedded breast-cancer data, saved as an MLflow Model
with its signature (skops format), then registered behind the gate. The catalog's
``example`` check runs it and requires the component's declared outputs.
"""

from kfp import dsl
from kfp.dsl import Dataset, Model, Output

from loopline.components.register_model import register_model
from loopline.core.images import PLATFORM_IMAGE


@dsl.component(base_image=PLATFORM_IMAGE)
def fit_example(model: Output[Model], train_rows: Output[Dataset], test_rows: Output[Dataset]):
    """Fit a logistic regression on the embedded breast-cancer data.

    Args:
        model: The MLflow Model, with its signature.
        train_rows: The rows it was fitted on.
        test_rows: Held-out rows.
    """
    import mlflow.sklearn
    import skops.io
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    frame = load_breast_cancer(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    train, test = train_test_split(frame, test_size=0.3, random_state=0)
    x = train.drop(columns=["target"])
    fitted = LogisticRegression(max_iter=5000).fit(x, train["target"])
    mlflow.sklearn.save_model(
        fitted,
        model.path,
        serialization_format="skops",
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(fitted)),
        signature=infer_signature(x, fitted.predict(x)),
        pip_requirements=["scikit-learn", "skops"],
    )
    train.to_parquet(train_rows.path, index=False)
    test.to_parquet(test_rows.path, index=False)


@dsl.pipeline(name="register-model-example")
def register_model_example(model_name: str):
    fitted = fit_example()
    register_model(
        model=fitted.outputs["model"],
        eval_rows=fitted.outputs["test_rows"],
        train_rows=fitted.outputs["train_rows"],
        model_name=model_name,
        task="classification",
        label_column="target",
    )
