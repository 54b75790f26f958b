"""Parity: for deterministic components, the Prefect engine's outputs equal kfp.local's.

One pipeline per feature. kfp.local is the reference implementation of KFP semantics.
"""

import pytest

from loopline.core.settings import load_settings
from loopline.pipelines.local.kfp_local import run_local
from tests.pipelines.feature_pipelines import FEATURES

pytestmark = pytest.mark.slow


def comparable(outputs: dict) -> dict:
    """Artifacts compare by content, parameters by value."""
    result = {}
    for key, value in outputs.items():
        if isinstance(value, dict) and "path" in value:
            value = value["path"]
        result[key] = value
    return result


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_prefect_engine_matches_kfp_local(feature, engine, tmp_path):
    pipeline, arguments = FEATURES[feature]
    ours = engine.run(pipeline, arguments, enable_cache=False)
    assert ours.succeeded, ours.error
    reference = run_local(pipeline, arguments, load_settings({"LOOPLINE_HOME": str(tmp_path)}))
    assert reference.succeeded, reference.error
    assert comparable(ours.outputs) == comparable(reference.outputs)
