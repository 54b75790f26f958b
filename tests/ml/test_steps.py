import pytest

from loopline.core.layout import ERROR
from loopline.ml.sources import SourceError
from loopline.ml.steps import ingest_step


def test_a_failing_step_leaves_its_error_beside_its_output(tmp_path):
    out = tmp_path / "ingest" / "dataset"
    with pytest.raises(SourceError):
        ingest_step(
            str(tmp_path / "none.csv"), out, run_id="r", label_column="y", image_size=8, seed=0
        )
    message = (tmp_path / "ingest" / ERROR).read_text()
    assert message.startswith("SourceError: ") and "neither a built-in" in message
