"""Where the tensors run, and the helpers every stage shares: the device choice, the one
autocast context, batch sizes and batch boundaries, and the process group under torchrun.

Used by train, predict, jobs, ui and bench alike, so each of these stays about its own job.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .settings import zero_gpu_space

# True in a ZeroGPU GPU worker (set by zerogpu.gpu_task): the one process on such a Space whose CUDA is real.
in_gpu_worker = False


def cuda_usable() -> bool:
    """Whether this process can use CUDA. On a ZeroGPU Space torch says CUDA is available in the app
    process too (`spaces` emulates it there, and any real use raises), so there only a GPU worker can."""
    return (in_gpu_worker or not zero_gpu_space()) and torch.cuda.is_available()


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    if cuda_usable():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def autocast(device: torch.device):
    """bf16 autocast on CUDA, where it is a large win; off elsewhere (measured ~20x slower on a
    CPU of this kind)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def inference_batch_size(device: torch.device) -> int:
    # Measured on a 2-core CPU (MobileNetV2 forward): 50 img/s at batch 8-16, 20 img/s at 64 --
    # big batches fall out of cache. GPUs want large batches.
    return 16 if device.type == "cpu" else 256


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive batches; a trailing batch of 1 is folded into the previous one, because
    BatchNorm cannot normalise a single sample in train mode."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [slice(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def init_distributed() -> None:
    """Join the process group that `torchrun` describes in the environment (no-op otherwise)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
