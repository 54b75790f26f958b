"""The diabetes project's own components: the split and a PyTorch regressor of its own.

The network is a plain ``nn.Module``, logged with MLflow's pytorch flavor. That flavor
pickles the module (with cloudpickle, so a class defined here travels with it): loopline
loads it only from its registry, after checking the files' sha256.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from loopline.core.images import PLATFORM_IMAGE


@dsl.component(base_image=PLATFORM_IMAGE)
def prepare(dataset: str, seed: int, train_rows: Output[Dataset], test_rows: Output[Dataset]):
    """Split labelled patients into training and test rows.

    Args:
        dataset: A Parquet file of labelled patients (loopline's monitor passes the
            retraining data here).
        seed: Seed of the split.
        train_rows: The rows to fit on.
        test_rows: The held-out rows: the gate judges the model on them.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from loopline.ml.retraining_data import dataset_file

    frame = pd.read_parquet(dataset_file(dataset))  # a path, or an artifact URI on Kubeflow
    train, test = train_test_split(frame, test_size=0.3, random_state=seed)
    train.to_parquet(train_rows.path, index=False)
    test.to_parquet(test_rows.path, index=False)


@dsl.component(base_image=PLATFORM_IMAGE)
def train_regressor(
    train_rows: Input[Dataset], model: Output[Model], epochs: int, hidden: int, seed: int
):
    """Fit a small PyTorch network to predict disease progression.

    Args:
        train_rows: The rows to fit on.
        model: The MLflow Model (pytorch flavor), with its signature.
        epochs: Passes over the data (1 makes a deliberately weak model).
        hidden: Units in the hidden layer.
        seed: Seed of the initialisation and the shuffling.
    """
    import mlflow.pytorch
    import numpy as np
    import pandas as pd
    import torch
    from mlflow.models import infer_signature
    from torch import nn

    class Regressor(nn.Module):
        """Standardises its inputs and target inside, so callers send raw columns."""

        def __init__(self, x: torch.Tensor, y: torch.Tensor, hidden: int):
            super().__init__()
            self.register_buffer("x_mean", x.mean(0))
            self.register_buffer("x_std", x.std(0) + 1e-6)
            self.register_buffer("y_mean", y.mean())
            self.register_buffer("y_std", y.std())
            self.net = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.net((x - self.x_mean) / self.x_std)[:, 0]
            return out * self.y_std + self.y_mean

    torch.manual_seed(seed)
    frame = pd.read_parquet(train_rows.path)
    features = frame.drop(columns=["progression"]).astype("float32")
    x = torch.from_numpy(features.to_numpy())
    y = torch.from_numpy(frame["progression"].to_numpy("float32"))
    net = Regressor(x, y, hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            loss = (
                (
                    net.net((x[batch] - net.x_mean) / net.x_std)[:, 0]
                    - (y[batch] - net.y_mean) / net.y_std
                )
                ** 2
            ).mean()
            loss.backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        predicted = net(x).numpy().astype(np.float64)
    mlflow.pytorch.save_model(
        net,
        model.path,
        # pt2, MLflow's non-pickle format, takes only a tensor signature; named columns
        # need the pickle format (loopline verifies the files before every load).
        serialization_format="pickle",
        signature=infer_signature(features, predicted),
        pip_requirements=["torch"],  # skips MLflow's slow inference
        metadata={"loopline": {"task": "regression"}},
    )
