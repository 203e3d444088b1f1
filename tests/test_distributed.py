"""`torchrun` training: two CPU processes (gloo), one checkpoint in the usual format."""
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from bees_ants.checkpoint import load_checkpoint
from conftest import make_dataset

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_two_process_cpu_training(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=9, n_val=5)  # odd sizes: shards must be padded
    out = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "bees_ants", "train", "--data-dir", str(data),
           "--backbone-weights", "none", "--mode", "finetune", "--epochs", "3", "--lr", "0.01", "--batch-size", "4",
           "--image-size", "64", "--device", "cpu", "--output", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sum(line.startswith("epoch ") for line in proc.stdout.splitlines()) == 3  # rank 0 reports
    meta = load_checkpoint(out).meta
    assert meta["device"].endswith("x 2 processes") and meta["status"] == "completed"
    history = meta["history"]
    assert len(history) == 3 and history[-1]["train_loss"] < history[0]["train_loss"]
    # metrics are summed over both shards: val accuracy is a multiple of 1/10 (10 val images in all)
    assert all(abs(h["val_acc"] * 10 - round(h["val_acc"] * 10)) < 1e-9 for h in history)
