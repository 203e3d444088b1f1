"""ZeroGPU, the hardware free Hugging Face accounts can host a Gradio Space on.

There a GPU exists only inside functions decorated with `@spaces.GPU`: each call is scheduled
against the visitor's daily quota, runs in a worker forked from the app (and kept for the next
calls) for at most `duration` seconds, and gets its arguments and results pickled across. So:
- `gpu_task` is `spaces.GPU(duration=...)` on ZeroGPU and leaves the function as it is
  everywhere else (a laptop, CPU Basic, a dedicated GPU Space); the `spaces` package is imported
  only when present, so local runs need nothing new;
- the function it wraps (runner.training_events) takes a config and a path, not a decoded dataset,
  and yields small events;
- the app process must not initialise CUDA, and cannot ask torch whether it may: there `spaces`
  patches torch so that `torch.cuda.is_available()` is True while any real CUDA call raises.
  So on a ZeroGPU Space `device.pick_device` picks the CPU except in a GPU task's worker, which
  `gpu_task` marks: predict, evaluate, explain, export and push run on the app's CPU, and their
  batches are never pinned;
- the scheduler's refusals (quota used up, no GPU free in time, a duration over the limit) arrive
  as a gr.Error before the task starts; `gpu_task` turns them into `GpuRefused`, a UserError
  saying what happened and what to do (anonymous visitors have about 2 minutes a day).
The duration asked for comes from the epochs requested and a per-epoch estimate, capped at
`max_gpu_seconds()`; a run stops itself (as a cancel: best checkpoint kept) shortly before that
budget runs out, rather than being killed by the scheduler.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

from . import device
from .errors import UserError
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


class GpuRefused(UserError):
    """ZeroGPU did not run (or finish) a GPU task for a reason the visitor can act on: the message
    says what happened, `advice` what to do."""

    def __init__(self, what: str, advice: str):
        super().__init__(f"{what}. {advice}")
        self.what, self.advice = what, advice


def gpu_refusal(error: Exception, asked: int) -> GpuRefused | None:
    """The `GpuRefused` a ZeroGPU gr.Error stands for (`asked`: the seconds the task asked for),
    None for any other error. The scheduler's titles and messages are spaces/zero/client.py's."""
    title, message = getattr(error, "title", None), getattr(error, "message", None)
    if not (isinstance(title, str) and title.startswith("ZeroGPU") and isinstance(message, str)):
        return None
    fewer = f"or train fewer epochs (this run asked for {asked} s of GPU)"
    if title in ("ZeroGPU queue timeout", "ZeroGPU client error") or "No GPU was available" in message:
        return GpuRefused("No GPU came free in time: all of this Space's GPUs are busy",
                          "Click Train again in a minute; signed-in visitors wait less.")
    if title == "ZeroGPU quota exceeded" and message.startswith("Space app has reached its GPU limit"):
        return GpuRefused("This Space has used up its GPU time for now", "Try again later.")
    if title == "ZeroGPU quota exceeded":
        left = re.search(r"vs\. (\d+)s left", message)
        back = re.search(r"Try again in ([\d:]+)", message)
        what = "Your ZeroGPU quota is used up" + (f" ({left[1]} s left today)" if left else "")
        when = (f"It comes back in {back[1]} (h:mm:ss)" if back
                else "It comes back gradually over the day")
        return GpuRefused(what, f"Sign in to Hugging Face for more GPU time a day (an anonymous visitor gets "
                                f"about 2 minutes, a free account 5, PRO 40), {fewer}. {when}.")
    if title == "ZeroGPU illegal duration":
        return GpuRefused(f"This run asks for more GPU time ({asked} s) than ZeroGPU gives one task",
                          "Train fewer epochs; the Space's operator can lower BEES_ANTS_GPU_SECONDS.")
    if title == "ZeroGPU worker error" and message == "GPU task aborted":
        return GpuRefused("ZeroGPU stopped the run's GPU worker before the run ended (past its GPU time, "
                          "or the worker crashed)", f"The best checkpoint saved so far is kept. Click Train "
                          f"again, {fewer}.")
    if title == "ZeroGPU worker error":  # a bug in the task: its traceback is in the app's log
        return None
    return GpuRefused(f"ZeroGPU refused the run: {message}", "Try again later.")


def gpu_task(duration):
    """`@spaces.GPU(duration=duration)` on ZeroGPU, with the scheduler's refusals as `GpuRefused`;
    the function unchanged elsewhere. Closing the generator it returns closes the task's."""
    def decorate(fn):
        if not on_zero_gpu():
            return fn

        @functools.wraps(fn)
        def in_worker(*args, **kwargs):
            device.in_gpu_worker = True  # this runs in the GPU worker, where CUDA is real
            yield from fn(*args, **kwargs)
        on_gpu = spaces.GPU(duration=duration)(in_worker)

        @functools.wraps(fn)
        def scheduled(*args, **kwargs):
            try:
                yield from on_gpu(*args, **kwargs)
            except Exception as e:
                refusal = gpu_refusal(e, duration(*args, **kwargs) if callable(duration) else duration)
                if refusal is None:
                    raise
                raise refusal from None
        scheduled.zerogpu = None  # what the real decorator marks its functions with
        return scheduled
    return decorate

