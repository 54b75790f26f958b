"""The ``train`` component. Its hyper-parameters are ``TrainConfig``'s fields plus
``workers``, written out here because a cluster's executor reads them from this source
text; ``tests/components/test_train.py`` fails when the two differ."""

from kfp.dsl import Dataset, Input, Model, Output

from loopline.components.decorator import component


@component
def train(
    dataset: Input[Dataset],
    model: Output[Model],
    model_name: str,
    arch: str = "auto",
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 0.001,
    weight_decay: float = 0.0001,
    dropout: float = 0.2,
    hidden: int = 128,
    augment: bool = True,
    patience: int = 5,
    seed: int = 0,
    amp: bool = True,
    pretrained: str = "",
    freeze: str = "none",
    probe_epochs: int = 0,
    backbone_lr_scale: float = 1.0,
    input_size: int = 0,
    stream: str = "auto",
    workers: int = -1,
    run_id: str = "",
):
    """Train, in-process or on Ray Train's TorchTrainer, with early stopping, checkpoints
    and MLflow metrics.

    Args:
        dataset: The validated splits.
        model: The trained weights (safetensors), model spec and training summary.
        model_name: The registered model it is trained for.
        arch: The architecture: auto, or one of loopline.ml.model_spec.ARCHITECTURES.
        epochs: Maximum epochs; early stopping may end sooner.
        batch_size: Rows per batch and worker.
        lr: The learning rate.
        weight_decay: The L2 penalty, through Adam's weight_decay.
        dropout: Dropout before the classifier.
        hidden: Width of the hidden layer.
        augment: Whether image data is augmented.
        patience: Epochs without val-loss improvement before stopping.
        seed: Seed for initialisation, shuffling and the split.
        amp: Mixed precision, used only on CUDA.
        pretrained: Backbone weights: a file or folder, or models:/NAME/VERSION.
        freeze: What stays frozen after the probe: backbone, none or until:<layer>.
        probe_epochs: Epochs that train the new head alone before fine-tuning.
        backbone_lr_scale: The backbone learns at lr times this.
        input_size: The side images are resized to for a backbone; 0 for its own (224).
        stream: Stream the splits from Parquet: on, off, or auto (when the train and val splits would take more than the worker's memory budget).
        workers: Ray Train workers; 0 trains in-process; -1 chooses (in-process on one machine, 2 on a Ray cluster).
        run_id: The pipeline run, for the lineage.
    """
    from pathlib import Path

    from loopline.core.settings import load_settings
    from loopline.ml.hyperparameters import from_arguments
    from loopline.ml.steps import train_step

    config, workers = from_arguments(locals())
    summary = train_step(
        Path(dataset.path),
        Path(model.path),
        config,
        run_id=run_id,
        workers=workers,
        model_name=model_name,
        settings=load_settings(),
    )
    model.metadata.update(summary)
