"""loopline's own networks are one case of the model contract: an MLflow Model with a
signature and a task, whose registered files are checked before every load."""

import numpy as np
import pytest

from loopline.core.layout import DIGEST_TAG
from loopline.ml.dataset import read_split
from loopline.ml.model_contract import ModelTampered, file_digests, manifest_digest, read_contract
from loopline.ml.train_config import TrainConfig
from loopline.serving.champion import load_version
from loopline.serving.server import preflight
from loopline.storage.registry import Registry, model_folder
from tests.conftest import train_and_register


@pytest.fixture
def registered(settings, digits_dir, tmp_path):
    train_and_register(settings, digits_dir, tmp_path / "v1", TrainConfig(epochs=2))
    info = Registry(settings).champion(settings.model_name)
    return info, model_folder(settings, info)


def test_a_network_meets_the_contract_and_its_digest_is_recorded(registered):
    info, folder = registered
    contract = read_contract(folder)
    assert contract.task == "classification"
    assert contract.tensor == {"dtype": "float32", "shape": [-1, 64]}
    assert contract.flavors == ("python_function",) and not contract.pickled
    assert info.tags[DIGEST_TAG] == manifest_digest(file_digests(folder))


def test_mlflow_loads_a_network_and_answers_as_the_server_does(settings, digits_dir, registered):
    import mlflow.pyfunc

    info, folder = registered
    test = read_split(digits_dir, "test")
    labels = mlflow.pyfunc.load_model(str(folder)).predict(test.x)
    served, _ = load_version(settings, info).answer(test.x)
    assert list(labels) == served
    # Its input schema is enforced by MLflow: a row of the wrong width is refused.
    with pytest.raises(Exception, match="shape"):
        mlflow.pyfunc.load_model(str(folder)).predict(test.x[:, :10])


def test_a_tampered_network_is_never_loaded_and_the_champion_stays(
    settings, digits_dir, registered, tmp_path
):
    info, folder = registered
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelTampered, match="not the model that was registered"):
        load_version(settings, info)
    with pytest.raises(ModelTampered):
        preflight(settings, None)
    # The gate cannot score a tampered champion, so it does not move it.
    result = train_and_register(settings, digits_dir, tmp_path / "v2", TrainConfig(epochs=3))
    assert not result["promoted"]
    assert "cannot be loaded" in " ".join(result["decision"]["reasons"])
    assert Registry(settings).champion(settings.model_name).version == "1"
    assert np.isfinite(result["metrics"]["accuracy"])
