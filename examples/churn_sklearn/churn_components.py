"""The churn project's own components: the split and the scikit-learn model.

They run in loopline's platform image, which has scikit-learn, pandas and MLflow; a
component that needs more declares ``packages_to_install``.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from loopline.core.images import PLATFORM_IMAGE


@dsl.component(base_image=PLATFORM_IMAGE)
def prepare(dataset: str, seed: int, train_rows: Output[Dataset], test_rows: Output[Dataset]):
    """Split labelled customers into training and test rows.

    Args:
        dataset: A Parquet file of labelled customers (loopline's monitor passes the
            retraining data here).
        seed: Seed of the split.
        train_rows: The rows to fit on.
        test_rows: The held-out rows: the gate judges the model on them.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from loopline.ml.retraining_data import dataset_file

    frame = pd.read_parquet(dataset_file(dataset))  # a path, or an artifact URI on Kubeflow
    train, test = train_test_split(
        frame, test_size=0.3, random_state=seed, stratify=frame["churned"]
    )
    train.to_parquet(train_rows.path, index=False)
    test.to_parquet(test_rows.path, index=False)


@dsl.component(base_image=PLATFORM_IMAGE)
def train_hgb(train_rows: Input[Dataset], model: Output[Model], max_iter: int, seed: int):
    """Fit a gradient-boosted classifier, with the string columns as categories.

    Args:
        train_rows: The rows to fit on.
        model: The MLflow Model (scikit-learn flavor, skops format), with its signature.
        max_iter: Boosting iterations (1 makes a deliberately weak model).
        seed: Seed of the fit.
    """
    import mlflow.sklearn
    import pandas as pd
    import skops.io
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    frame = pd.read_parquet(train_rows.path)
    x, y = frame.drop(columns=["churned"]), frame["churned"]
    categories = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    encode = ColumnTransformer(
        [("categories", categories, ["plan", "region"])], remainder="passthrough"
    )
    boosted = HistGradientBoostingClassifier(
        max_iter=max_iter, categorical_features=[0, 1], random_state=seed
    )
    pipeline = make_pipeline(encode, boosted).fit(x, y)
    mlflow.sklearn.save_model(
        pipeline,
        model.path,
        serialization_format="skops",  # not a pickle: skops loads only the listed types
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)),
        signature=infer_signature(x, pipeline.predict(x)),
        pip_requirements=["scikit-learn", "skops"],  # skips MLflow's slow inference
        metadata={"loopline": {"task": "classification"}},
    )
