"""The app as it runs on a ZeroGPU Space, emulated: tests/zerogpu_stub stands in for HF's `spaces`
package (each @spaces.GPU call runs in a forked worker with CUDA hidden, and is logged). The app
runs in a fresh interpreter (zerogpu_session.py), since whether training is wrapped is decided
when bees_ants is imported."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """The JSON summary zerogpu_session.py prints, and the stub's log of GPU calls."""
    root = tmp_path_factory.mktemp("zerogpu")
    log = root / "stub.log"
    env = {**os.environ, "SPACES_ZERO_GPU": "true", "ZEROGPU_STUB_LOG": str(log), "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": os.pathsep.join([str(TESTS / "zerogpu_stub"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("BEES_ANTS_GPU_SECONDS", None)
    done = subprocess.run([sys.executable, str(TESTS / "zerogpu_session.py"), str(root / "app")], env=env,
                          capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-5000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return summary, calls


pytestmark = pytest.mark.timeout(600)


def test_training_is_a_gpu_task_on_zero_gpu(session):
    summary, _ = session
    assert summary["on_zero_gpu"] and summary["wrapped"]


def test_a_run_trains_to_the_end_in_a_worker(session):
    summary, calls = session
    assert "Finished 3 epochs" in summary["final_status"] and "device: ZeroGPU" in summary["final_status"]
    assert any("epoch" in s for s in summary["statuses"][:-1])  # followed while it ran
    assert summary["model_exists"]
    asked = [c for c in calls if c["event"] == "call"]
    workers = [c for c in calls if c["event"] == "worker"]
    assert len(asked) == 3 and len(workers) == 3  # three runs: finished, cancelled, failed
    assert all(c["pid"] == summary["app_pid"] for c in asked)  # asked for by the app...
    assert all(w["pid"] != summary["app_pid"] for w in workers)  # ...trained elsewhere
    assert all(0 < c["duration"] <= summary["cap"] for c in asked)


def test_cancel_reaches_the_worker_and_keeps_the_checkpoint(session):
    summary, _ = session
    assert "Cancel requested" in summary["cancel_reply"]
    assert "Cancelled after" in summary["cancelled_status"] and "of 500 epochs" in summary["cancelled_status"]
    assert "Checkpoint:" in summary["cancelled_result"]
    assert summary["cancelled_labels"][0].startswith("resnet18 · finetune")
    assert summary["cancelled_labels"][0].endswith("(cancelled)")
    assert len(summary["cancelled_files"]) == 2  # the finished run's and the cancelled run's


def test_a_dataset_error_in_the_worker_reads_as_its_reason(session):
    summary, _ = session
    assert "Training failed" in summary["failed_status"] and "at least 2" in summary["failed_status"]
    assert "ZeroGPU worker error" not in summary["failed_status"]


def test_predict_runs_in_the_app_without_touching_cuda(session):
    summary, _ = session
    assert summary["predicted"] and set(summary["predicted"]) <= {"ants", "bees"} and "Classified 1 image" in summary["predict_problems"]
    assert summary["cuda_initialized"] is False
