"""The ``ingest`` component: a dataset in, stratified Parquet splits with a schema out."""

from kfp.dsl import Dataset, Output

from loopline.components.decorator import component


@component
def ingest(
    source: str,
    dataset: Output[Dataset],
    label_column: str = "label",
    image_size: int = 28,
    seed: int = 0,
    run_id: str = "",
):
    """Load a built-in dataset or files and write stratified Parquet splits with a schema.

    Args:
        source: A built-in dataset (digits, breast_cancer, ...) or a path: a CSV/Parquet
            file, an image folder (one sub-folder per class) or an MNIST IDX folder.
        dataset: The train, validation and test splits, with the schema, as Parquet.
        label_column: The label column of a CSV or Parquet file.
        image_size: The side images are resized to.
        seed: Seed of the stratified split.
        run_id: The pipeline run, for the lineage.
    """
    from pathlib import Path

    from loopline.ml.steps import ingest_step

    dataset.metadata.update(
        ingest_step(
            source,
            Path(dataset.path),
            run_id=run_id,
            label_column=label_column,
            image_size=image_size,
            seed=seed,
        )
    )
