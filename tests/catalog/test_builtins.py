"""Dogfooding: loopline's own components pass the catalog's checks and are published."""

import pytest

from loopline import catalog
from loopline.catalog import builtin_components as builtins
from loopline.core.images import VERSION
from loopline.core.settings import load_settings

pytestmark = pytest.mark.slow  # one small training run on the session's Prefect engine


def test_the_built_in_components_pass_every_check_and_publish_once(home, engine):
    settings = load_settings()
    outcomes = builtins.publish(settings, engine=engine)
    names = [
        "loopline-ingest",
        "loopline-validate-data",
        "loopline-train",
        "loopline-evaluate",
        "loopline-register",
        "loopline-package",
        "loopline-register-model",
    ]
    assert outcomes == [(n, f"published {VERSION}") for n in names]
    with catalog.opened(settings) as store:
        train = store.get("loopline-train", f"^{VERSION}")
        assert all(c["passed"] for c in train.report["checks"])
        assert train.interface["inputs"]["epochs"] == {"type": "NUMBER_INTEGER", "optional": True}
        assert train.owner == builtins.OWNER
    again = builtins.publish(settings, engine=engine)  # unchanged sources: nothing new
    assert again == [(n, f"{VERSION} already published") for n in names]
    assert (settings.home / "catalog" / "index.html").read_text().count("<h2 id=") == 7
    with catalog.opened(settings) as store:  # any pipeline's register step, from the catalog
        register_model = store.get("loopline-register-model", f"^{VERSION}")
    inputs = register_model.interface["inputs"]
    assert {"model", "eval_rows", "train_rows", "task", "label_column"} <= set(inputs)
