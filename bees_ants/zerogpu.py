"""ZeroGPU, the hardware free Hugging Face accounts can host a Gradio Space on.

There a GPU exists only inside functions decorated with `@spaces.GPU`: each call is scheduled
against the visitor's daily quota, runs in a worker forked from the app for at most `duration`
seconds, and gets its arguments and results pickled across. So:
- `gpu_task` is `spaces.GPU(duration=...)` on ZeroGPU and leaves the function as it is
  everywhere else (a laptop, CPU Basic, a dedicated GPU Space); the `spaces` package is imported
  only when present, so local runs need nothing new;
- the function it wraps (jobs.training_events) takes a config and a path, not a decoded dataset,
  and yields small events;
- the app process must not initialise CUDA: there `spaces` patches torch so that
  `torch.cuda.is_available()` is True while any real CUDA call raises. Predict, evaluate and
  their streamed batches therefore run on the app's CPU (catalog asks for it), and batches
  are pinned only for a model on a CUDA device, never because torch says CUDA is available.
The duration asked for comes from the epochs requested and a per-epoch estimate, capped at
`max_gpu_seconds()`; a run stops itself (as a cancel: best checkpoint kept) shortly before that
budget runs out, rather than being killed by the scheduler.
"""
from __future__ import annotations

from pathlib import Path

from .settings import gpu_seconds, zero_gpu_space

try:  # installed on ZeroGPU Spaces; not needed anywhere else
    import spaces
except ImportError:
    spaces = None

# The scheduler refuses a call asking for more than a visitor may use (their daily quota is
# 2 minutes unauthenticated, 5 signed in on a free account, 40 on PRO). Override on a Space whose
# visitors have more with BEES_ANTS_GPU_SECONDS.
DEFAULT_MAX_GPU_SECONDS = 110
SETUP_SECONDS = 20  # worker start, scan and decode, moving the model over
STOP_MARGIN_SECONDS = 10  # stop this early, so the best checkpoint is saved before the deadline
# Images per second through one epoch on a ZeroGPU-class GPU, by what trains. The CPU-side
# augmentation bounds fine-tuning; fixed mode trains the head on cached features.
IMAGES_PER_SECOND = {"finetune": 150, "progressive": 300, "fixed": 1500}


def on_zero_gpu() -> bool:
    return spaces is not None and zero_gpu_space()


def max_gpu_seconds() -> int:
    return gpu_seconds() or DEFAULT_MAX_GPU_SECONDS


def training_duration(config, *args, **kwargs) -> int:
    """Seconds of GPU to ask for: setup plus the epochs at an estimated rate, within the cap."""
    train_dir = Path(config.data_dir) / "train"
    images = sum(1 for p in train_dir.rglob("*") if p.is_file()) if train_dir.is_dir() else 1000
    per_epoch = 1 + images / IMAGES_PER_SECOND.get(config.mode, 150)
    return int(min(max_gpu_seconds(), SETUP_SECONDS + config.epochs * per_epoch))


def gpu_task(duration):
    """`@spaces.GPU(duration=duration)` on ZeroGPU; the function unchanged elsewhere."""
    def decorate(fn):
        return spaces.GPU(duration=duration)(fn) if on_zero_gpu() else fn
    return decorate
