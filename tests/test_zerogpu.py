"""The app as it runs on a ZeroGPU Space, emulated: tests/zerogpu_stub stands in for HF's `spaces`
package as it behaves (torch patched in the app process: CUDA "available", any real use raising;
each @spaces.GPU call scheduled against a quota, then run in a forked worker kept between calls,
with Gradio's request context carried over; every call logged). The app runs in a fresh
interpreter (zerogpu_session.py), since whether training is wrapped is decided when bees_ants is
imported. The README's front matter is the Space's configuration, so what it asks for is tested here too."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fake_hub import serve_fake_hub

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
TOKEN = "hf_zero_write_token"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """The JSON summary zerogpu_session.py prints, the stub's log of GPU calls, and the fake Hub."""
    root = tmp_path_factory.mktemp("zerogpu")
    log = root / "stub.log"
    with serve_fake_hub(TOKEN) as (endpoint, hub):
        env = {**os.environ, "SPACES_ZERO_GPU": "true", "ZEROGPU_STUB_LOG": str(log), "GRADIO_ANALYTICS_ENABLED": "False",
               "HF_ENDPOINT": endpoint, "HF_HOME": str(root / "hf"),
               "PYTHONPATH": os.pathsep.join([str(TESTS / "zerogpu_stub"), str(REPO), os.environ.get("PYTHONPATH", "")])}
        for name in ("BEES_ANTS_GPU_SECONDS", "BEES_ANTS_MEMORY_BUDGET_MB", "ZEROGPU_STUB_QUOTA_LEFT"):
            env.pop(name, None)
        done = subprocess.run([sys.executable, str(TESTS / "zerogpu_session.py"), str(root / "app"), endpoint, TOKEN],
                              env=env, capture_output=True, text=True, timeout=540)
        assert done.returncode == 0, done.stderr[-5000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return summary, calls, hub


pytestmark = pytest.mark.timeout(600)


def test_training_is_a_gpu_task_on_zero_gpu(session):
    summary, _, _ = session
    assert summary["on_zero_gpu"] and summary["wrapped"]
    assert summary["cuda_seems_available"]  # as `spaces` makes torch say in the app process


def test_runs_train_in_one_worker_that_the_app_reuses(session):
    summary, calls, _ = session
    assert "Finished 3 epochs" in summary["final_status"] and "device: ZeroGPU" in summary["final_status"]
    assert any("epoch" in s for s in summary["statuses"][:-1])  # followed while it ran
    assert summary["model_exists"]
    scheduled = [c for c in calls if c["event"] == "schedule"]
    ran = [c for c in calls if c["event"] == "worker"]
    assert len(scheduled) == 4 and len(ran) == 3  # finished, cancelled, failed; the 4th was refused
    assert all(c["pid"] == summary["app_pid"] and c["request"] and c["token"] for c in scheduled)  # the visitor's quota
    assert len({w["pid"] for w in ran}) == 1 and ran[0]["pid"] != summary["app_pid"]  # one worker, reused
    assert all(w["event_id"] for w in ran) and len({w["event_id"] for w in ran}) == 3  # each Train request's context
    assert all(0 < c["duration"] <= summary["cap"] for c in scheduled)


def test_cancel_reaches_the_worker_and_keeps_the_checkpoint(session):
    summary, _, _ = session
    assert "Cancel requested" in summary["cancel_reply"]
    assert "Cancelled after" in summary["cancelled_status"] and "of 500 epochs" in summary["cancelled_status"]
    assert "Checkpoint:" in summary["cancelled_result"]
    assert summary["cancelled_labels"][0].startswith("resnet18 · finetune")
    assert summary["cancelled_labels"][0].endswith("(cancelled)")
    assert len(summary["cancelled_files"]) == 2  # the finished run's and the cancelled run's


def test_a_dataset_error_in_the_worker_reads_as_its_reason(session):
    summary, _, _ = session
    assert "Training failed" in summary["failed_status"] and "at least 2" in summary["failed_status"]
    assert "ZeroGPU worker error" not in summary["failed_status"]


def test_the_app_process_works_on_its_cpu_where_cuda_only_seems_available(session):
    summary, _, hub = session
    assert summary["predicted"] and set(summary["predicted"]) <= {"ants", "bees"} and "Classified 1 image" in summary["predict_problems"]
    assert "ants · " in summary["explained"] or "bees · " in summary["explained"]  # a captioned Grad-CAM overlay
    assert "val accuracy" in summary["evaluation"] and "⚠" not in summary["evaluation"]  # its val set streamed
    assert summary["exported"] == ".pt2"
    assert "alice/zero-ants" in summary["pushed"] and "model.safetensors" in hub.repos["alice/zero-ants"]
    assert summary["cuda_initialized"] is False


def test_a_used_up_gpu_quota_says_what_happened_and_what_to_do(session):
    summary, _, _ = session
    status = summary["refused_status"]
    assert "Training failed" in status and "unexpected error" not in status
    assert "ZeroGPU quota is used up (5 s left today)" in status
    assert "Sign in to Hugging Face" in status and "fewer epochs" in status and "comes back in 3:12:05" in status
    assert "Change the dataset" not in status


def test_the_space_asks_signed_in_visitors_for_a_token_that_can_push():
    """A push with the sign-in token creates a model repo and writes to it: the Hub's OAuth scope
    for that is contribute-repos (create repos, write to those the app created)."""
    front_matter = (REPO / "README.md").read_text().split("---")[1]
    config = yaml.safe_load(front_matter)
    assert config["hf_oauth"] is True
    assert "contribute-repos" in config["hf_oauth_scopes"]


def test_on_a_zero_gpu_space_only_a_gpu_worker_picks_cuda(monkeypatch):
    from bees_ants import device
    monkeypatch.setattr(device.torch.cuda, "is_available", lambda: True)  # what `spaces` makes torch say
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert device.pick_device().type == "cpu"  # the app process
    monkeypatch.setattr(device, "in_gpu_worker", True)
    assert device.pick_device().type == "cuda"  # a @spaces.GPU worker
    monkeypatch.setenv("SPACES_ZERO_GPU", "false")
    monkeypatch.setattr(device, "in_gpu_worker", False)
    assert device.pick_device().type == "cuda"  # any other machine with a GPU


@pytest.mark.parametrize("title, message, expected", [
    # the real scheduler's titles and messages (spaces 0.51.x, zero/client.py)
    ("ZeroGPU quota exceeded", "You have exceeded your free ZeroGPU quota (90s requested vs. 12s left). Try again in 0:41:07. ",
     ["ZeroGPU quota is used up (12 s left today)", "Sign in", "fewer epochs (this run asked for 90 s", "comes back in 0:41:07"]),
    ("ZeroGPU quota exceeded", "You have exceeded your ZeroGPU runs limit. ", ["quota is used up", "comes back gradually"]),
    ("ZeroGPU quota exceeded", "Space app has reached its GPU limit. Try re-running outside of examples if it happened "
     "after clicking one", ["This Space has used up its GPU time", "Try again later"]),
    ("ZeroGPU illegal duration", "The requested GPU duration (90s) is larger than the maximum allowed",
     ["more GPU time (90 s) than ZeroGPU gives one task", "fewer epochs"]),
    ("ZeroGPU queue timeout", "No GPU was available after 60s. Retry later", ["No GPU came free in time", "again in a minute"]),
    ("ZeroGPU client error", "No GPU was available", ["No GPU came free in time"]),
    ("ZeroGPU quota exceeded", "No GPU was available after 60s. Try re-running outside of examples if it happened "
     "after clicking one", ["No GPU came free in time"]),
    ("ZeroGPU worker error", "GPU task aborted", ["stopped the run's GPU worker", "best checkpoint saved so far is kept"]),
])
def test_zero_gpu_refusals_read_as_what_happened_and_what_to_do(title, message, expected):
    import gradio as gr

    from bees_ants.zerogpu import gpu_refusal
    refusal = gpu_refusal(gr.Error(message, title=title), 90)
    assert all(text in str(refusal) for text in expected), str(refusal)


def test_other_errors_are_no_refusals():
    import gradio as gr

    from bees_ants.zerogpu import gpu_refusal
    assert gpu_refusal(gr.Error("RuntimeError", title="ZeroGPU worker error"), 90) is None  # a bug in the task
    assert gpu_refusal(gr.Error("bad input"), 90) is None
    assert gpu_refusal(ValueError("x"), 90) is None
