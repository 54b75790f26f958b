import pickle

import pytest
import torch

from loopline.ml.augment import random_affine
from loopline.ml.model_spec import ModelSpec
from loopline.ml.models import build_model
from loopline.ml.weights import load_model, save_model


@pytest.mark.parametrize(
    ("arch", "shape"),
    [("mlp", [1, 8, 8]), ("cnn", [1, 8, 8]), ("cnn", [3, 28, 28]), ("tabular_mlp", [30])],
)
def test_every_architecture_maps_flat_rows_to_class_logits(arch, shape):
    spec = ModelSpec(arch=arch, input_shape=shape, num_classes=4)
    model = build_model(spec).eval()
    assert model(torch.rand(5, spec.num_features)).shape == (5, 4)


def test_seed_mlp_is_dense_128_with_dropout_02():
    model = build_model(ModelSpec(arch="mlp", input_shape=[1, 28, 28], num_classes=10))
    layers = list(model.layers)
    assert [type(m).__name__ for m in layers] == ["Flatten", "Linear", "ReLU", "Dropout", "Linear"]
    assert layers[1].out_features == 128 and layers[3].p == 0.2


def test_spec_errors_say_what_to_use():
    with pytest.raises(ValueError, match="use one of mlp, cnn, tabular_mlp"):
        ModelSpec(arch="resnet", input_shape=[4], num_classes=2)
    with pytest.raises(ValueError, match="--arch tabular_mlp"):
        ModelSpec(arch="cnn", input_shape=[30], num_classes=2)


def test_weights_round_trip_through_safetensors_without_pickle(tmp_path):
    spec = ModelSpec(arch="tabular_mlp", input_shape=[6], num_classes=3)
    model = build_model(spec)
    model.set_normalization([1.0] * 6, [2.0] * 6)
    save_model(tmp_path, model, spec)
    assert (tmp_path / "model.safetensors").read_bytes()[8:9] == b"{"  # a JSON header, no pickle
    loaded, loaded_spec = load_model(tmp_path)
    x = torch.rand(4, 6)
    assert loaded_spec == spec
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert torch.equal(loaded.std, torch.full((6,), 2.0))  # normalization travels in the file


def test_weights_only_loading_refuses_a_malicious_pickle(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("code ran while loading",))

    path = tmp_path / "optimizer.pt"
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_augmentation_identity_and_shift():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 4] = 1.0
    same = random_affine(image, max_shift=0, max_degrees=0, scale=(1, 1))
    torch.testing.assert_close(same, image)
    moved = random_affine(
        image.repeat(64, 1, 1, 1), max_shift=0.2, generator=torch.Generator().manual_seed(0)
    )
    centres = (moved[:, 0] * torch.arange(9.0)).sum((1, 2)) / moved[:, 0].sum((1, 2)).clamp_min(
        1e-6
    )
    assert centres.std() > 0.3  # the bright pixel lands in different columns
