"""One training job per server, run in a background thread, watched by any number of viewers.

The app's Train button asks `JobManager.start` for a job (or is told why not); pages then follow
the job through `follow`, which yields a snapshot whenever something changes. The state lives
here, not in a request, so a reloaded page or a second browser sees the same job, and closing a
tab stops nothing. An exception in the thread becomes a `failed` job with a readable message.
Nothing here knows about Gradio.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .data import SkippedFile, load_dataset
from .errors import UserError
from .models import preprocessing_for
from .device import describe_device, pick_device
from .train import EpochRecord, TrainConfig, TrainingRun

log = logging.getLogger(__name__)

ACTIVE = ("preparing", "scanning", "running")  # then one of: completed, cancelled, failed
# Errors whose message is written for users; anything else is a bug and also gets a traceback.
USER_ERRORS = (UserError,)


class JobBusy(RuntimeError):
    """A job is already running; the message says which."""


@dataclass
class Job:
    id: int
    config: TrainConfig
    device: str
    started: float  # time.time()
    status: str = "scanning"  # "preparing" first when a prepare step (a download) comes before the scan
    version: int = 0  # the manager's change counter when this copy was taken
    finished: float | None = None
    cancel_requested: bool = False
    classes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[SkippedFile] = field(default_factory=list)
    history: list[EpochRecord] = field(default_factory=list)
    checkpoint_path: str | None = None  # set once a best-so-far checkpoint is on disk
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def elapsed(self, now: float | None = None) -> float:
        return (self.finished or now or time.time()) - self.started

    def eta(self) -> float | None:
        """Seconds left, from the last epoch's time: it adapts at once when epochs get cheaper
        (fixed mode stops extracting features after its cached views)."""
        if not self.history or not self.active:
            return None
        last = self.history[-1]
        return last.seconds * (self.config.epochs - last.epoch)


class JobManager:
    def __init__(self):
        self._changed = threading.Condition()
        self._job: Job | None = None
        self._version = 0
        self._cancel = threading.Event()

    def start(self, config: TrainConfig, prepare: Callable[[], object] | None = None) -> Job:
        """Start training in a background thread. `prepare` runs first in that thread (e.g. a
        dataset download). Raises JobBusy while another job is active."""
        with self._changed:
            current = self._job
            if current is not None and current.active:
                raise JobBusy(f"a training job is already running ({_progress(current)}); "
                              "wait for it to finish or cancel it first")
            self._cancel = threading.Event()
            job = Job(id=(current.id + 1 if current else 1), config=config,
                      device=describe_device(pick_device(config.device)), started=time.time(),
                      status="preparing" if prepare else "scanning")
            self._job = job
            self._bump()
            snapshot = copy.deepcopy(job)
        thread = threading.Thread(target=self._run, args=(job, self._cancel, prepare),
                                  name=f"training-job-{job.id}", daemon=True)
        thread.start()
        return snapshot

    def cancel(self) -> bool:
        """Ask the running job to stop after its current batch. False if nothing is running."""
        with self._changed:
            if self._job is None or not self._job.active:
                return False
            self._cancel.set()
            self._job.cancel_requested = True
            self._bump()
            return True

    def snapshot(self) -> Job | None:
        with self._changed:
            return copy.deepcopy(self._job)

    def follow(self, seen_version: int = -1, timeout: float = 10.0) -> Iterator[Job | None]:
        """Yield the job now if it changed since `seen_version`, then after every change, and
        return once no job is active. `timeout` bounds each wait so an abandoned follower
        (a closed tab) gets a chance to be stopped by its caller."""
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._version != seen_version, timeout)
                version, job = self._version, copy.deepcopy(self._job)
            if version != seen_version:
                seen_version = version
                yield job
            if job is None or not job.active:
                return

    # -- the job thread ------------------------------------------------------------------------

    def _bump(self) -> None:
        # Called with the lock held: every change gets a new version and wakes all followers.
        self._version += 1
        if self._job is not None:
            self._job.version = self._version
        self._changed.notify_all()

    def _update(self, job: Job, **changes) -> None:
        with self._changed:
            for name, value in changes.items():
                setattr(job, name, value)
            self._bump()

    def _run(self, job: Job, cancel: threading.Event, prepare) -> None:
        outcome = {"status": "failed", "error": "the training thread stopped unexpectedly"}
        try:
            outcome = {"status": self._train(job, cancel, prepare)}
        except USER_ERRORS as e:
            outcome = {"status": "failed", "error": str(e)}
        except Exception as e:
            log.exception("training job %d failed", job.id)
            outcome = {"status": "failed", "error": f"unexpected error: {type(e).__name__}: {e}"}
        finally:  # whatever happened, the job ends, or no other job could ever start
            self._update(job, finished=time.time(), **outcome)

    def _train(self, job: Job, cancel: threading.Event, prepare) -> str:
        if prepare is not None:
            prepare()
            self._update(job, status="scanning")
        dataset = load_dataset(job.config.data_dir, preprocessing_for(job.config.arch))
        self._update(job, status="running", classes=list(dataset.classes), counts=dataset.counts(),
                     skipped=list(dataset.skipped))
        run = TrainingRun(job.config, dataset, cancel=cancel)
        for record in run:
            # The best-so-far checkpoint is on disk by the time an epoch's record arrives.
            self._update(job, history=job.history + [record], checkpoint_path=run.checkpoint_path)
        return run.status


def _progress(job: Job) -> str:
    if job.history:
        return f"epoch {job.history[-1].epoch} of {job.config.epochs} done"
    return job.status
