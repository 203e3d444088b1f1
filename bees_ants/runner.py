"""One training run as a stream of small events, for whoever runs it on the app's behalf.

`TrainingRun` trains in a loop and reports progress through a callback; the job queue (jobs.py)
wants a stream it can read in its runner thread, or across a process boundary on ZeroGPU, where
`training_events` runs in a forked GPU worker (see zerogpu.py) and only picklable values cross.
So the run trains in a thread of its own and its callbacks become events on a queue.

When a run stops is decided by one small protocol, `train.ShouldStop` (`is_set()`), polled
between batches: the visitor's cancel (`CancelFlag`, a file, so it reaches a forked worker),
the run's time limit (`Deadline`), and the consumer going away. That last one is the closing
contract: when whoever reads the events stops early (closes the generator, or drops it to the
garbage collector), the run is cancelled and its thread joined before the close returns, so no
training goes on with no owner, and the best checkpoint so far is saved as for any cancel.
"""
from __future__ import annotations

import ctypes
import gc
import os
import queue
import threading
import time
import traceback
from pathlib import Path
from typing import Iterator

from .data import load_dataset
from .errors import UserError
from .models import preprocessing_for
from .train import Cancelled, ShouldStop, TrainConfig, TrainingRun
from .zerogpu import gpu_task, training_duration


class CancelFlag:
    """A cancel request that crosses process boundaries: a file. A stat per batch costs nothing
    next to a forward pass."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def set(self) -> None:
        Path(self.path).touch()


class Deadline:
    """Set once `seconds` have passed since it was made; None: never."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self._at = time.monotonic() + seconds if seconds is not None else None

    def is_set(self) -> bool:
        return self._at is not None and time.monotonic() >= self._at


class FirstOf:
    """Set when any of `conditions` is; `which` is the first one found set, so the run can say why
    it stopped (a cancel, or its time limit)."""

    def __init__(self, *conditions: ShouldStop):
        self.conditions = conditions
        self.which: ShouldStop | None = None

    def is_set(self) -> bool:
        if self.which is None:
            self.which = next((c for c in self.conditions if c.is_set()), None)
        return self.which is not None


def settle_long_lived_objects() -> None:
    """Move everything alive now (torch, gradio, the built app: what lives as long as the process)
    out of the cycle collector's sight, so each later collection, `release_memory`'s after every run
    included, walks only what came since: half a million objects took it 0.3 s a time on a CPU.
    Called once the app is built (app.py). Reference counting still frees any of them."""
    gc.collect()  # what is garbage already is not kept for good
    gc.freeze()


def release_memory() -> None:
    """Give a finished run's memory back: collect its reference cycles, empty the CUDA cache, and
    on glibc return freed heap pages to the system (glibc keeps them otherwise, and an idle app
    would go on holding a fine-tune's gigabytes)."""
    gc.collect()
    try:
        import torch
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:  # best effort: never fail a run for this
        pass
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


@gpu_task(duration=training_duration)
def training_events(config: TrainConfig, cancel_path: str, time_limit: float | None = None) -> Iterator[tuple]:
    """Scan, then train, yielding ("scanned", classes, counts, skipped, storage), ("progress", stage,
    done, total), ("epoch", record, checkpoint_path), ("time_limit", seconds) when the run stopped
    because `time_limit` seconds had passed (it stops as a cancel does: best checkpoint kept), and
    last ("end", status) -- or ("failed", reason) for a problem the user can fix (a bad dataset,
    weights that do not fit). Takes only a config, a path and a number, so it can run in a forked
    GPU worker (ZeroGPU) as well as in a thread here."""
    events: queue.SimpleQueue = queue.SimpleQueue()
    done = object()
    deadline, consumer_gone = Deadline(time_limit), threading.Event()
    stop = FirstOf(CancelFlag(cancel_path), deadline, consumer_gone)

    def progress(stage: str, n: int, total: int) -> None:
        # The scan has no cancel check of its own: its progress callback is where it stops.
        if stop.is_set():
            raise Cancelled
        events.put(("progress", stage, n, total))

    def train() -> str:
        # The dataset, model, optimiser and cached features live in this frame and the run only,
        # so they are garbage once it returns.
        try:
            dataset = load_dataset(config.data_dir, preprocessing_for(config.arch, config.image_size), on_progress=progress,
                                   memory_budget_mb=config.memory_budget_mb)
        except Cancelled:
            return "cancelled"
        events.put(("scanned", list(dataset.classes), dataset.counts(), list(dataset.skipped), dataset.storage))
        run = TrainingRun(config, dataset, cancel=stop, on_progress=progress)
        for record in run:
            events.put(("epoch", record, run.checkpoint_path))
        return run.status

    def produce() -> None:
        released = False
        try:
            status = train()
            release_memory()  # before "end": the job's end is when its memory is back
            released = True
            if status == "cancelled" and stop.which is deadline:
                events.put(("time_limit", time_limit))
            events.put(("end", status))
        except UserError as e:  # as text: on ZeroGPU only that crosses back from the GPU worker
            traceback.clear_frames(e.__traceback__)  # its frames would keep the run's tensors alive
            events.put(("failed", str(e)))
        except BaseException as e:  # a bug: raised in the consumer, with its traceback
            traceback.clear_frames(e.__traceback__)  # the lines stay; the frames' locals (tensors) go
            events.put(("error", e))
        finally:
            if not released:
                release_memory()
            events.put(done)

    # Progress arrives from inside an epoch, through a callback: a thread turns it into yields.
    producer = threading.Thread(target=produce, name="training", daemon=True)
    producer.start()
    try:
        while (event := events.get()) is not done:
            if event[0] == "error":
                raise event[1]
            yield event
    finally:  # the end, or the consumer stopped reading: either way no run goes on without it
        consumer_gone.set()
        producer.join()
