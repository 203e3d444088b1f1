"""The soak run, short: `python app.py` with an API visitor, the signed-in stand-in, an MCP agent
and a flood for 10 seconds (bench/soak.py), each visitor's loop started in that time finished
(without the ONNX export, tens of seconds on a small CPU; tests/test_anywhere_app.py exports).
None may end in an error, and what each visitor keeps stays within the budgets, here one of each.
No timing is asserted."""
import pytest

pytest.importorskip("mcp")

from bench.soak import soak  # noqa: E402
from conftest import IMAGE_SIZE  # noqa: E402

BUDGETS = {"BEES_ANTS_MAX_DATASETS": "1", "BEES_ANTS_MAX_MODELS": "1", "BEES_ANTS_KEEP_DOWNLOADS": "1"}


def test_a_short_soak_has_no_errors_and_keeps_within_the_budgets(tmp_path):
    report = soak(tmp_path, visitors=1, agents=1, seconds=10, exports=False, sample_every=2,
                  env={**BUDGETS, "BEES_ANTS_IMAGE_SIZE": str(IMAGE_SIZE)},
                  log=lambda _: None)
    errors = {name: row["first_errors"] for name, row in report["endpoints"].items() if row["errors"]}
    assert report["errors"] == 0, errors
    assert report["loops"]["api visitor"] >= 1 and report["loops"]["signed-in visitor"] >= 1
    assert report["loops"]["mcp agent"] >= 1
    assert report["endpoints"]["train (flood)"]["refusals"] >= 1  # one run at a time for the flood
    kept = report["kept"]
    assert kept["datasets"] <= 1 and kept["models"] <= 1 and kept["downloads"] <= 1, kept
    assert kept["signed-in visitors"] == 1  # the stand-in was taken for signed in, not for a session
    assert len(report["samples"]) >= 2 and all(s["rss_mb"] > 0 and s["fds"] > 0 for s in report["samples"])
