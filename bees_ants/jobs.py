"""Training jobs for many visitors: a queue, a few runner threads, and any number of followers.

The app's Train button asks `JobManager.submit` for a job (or is told why not); pages then follow
their visitor's job through `follow`, which yields a snapshot whenever it changes. State lives
here, not in a request, so a reloaded page or a second browser of the same visitor sees the same
job, and closing a tab stops nothing -- except on ZeroGPU, where the GPU belongs to the request
that asked for it (`request_bound`): there the Train request carries the run and leaving the page
cancels it.

- Each job belongs to one visitor (`owner`, a Visitor.key); a visitor has at most one queued or
  running job, and only its owner can cancel it.
- At most `max_running` jobs train at once (default 1 per device); the others wait in a bounded
  queue, each told its position and an estimated start (RunTimes: the work ahead of it, images
  times epochs, at the seconds per image measured here).
- Fair share: identities are free (every new API client is a new visitor), so one source must not
  be able to fill the queue. Anonymous visitors may have at most `max_per_source` jobs queued or
  running per network address (`source`), and only `max_queued - signed_in_places` of the queue's
  places; signed-in visitors, who cannot multiply at will, may use every place. And no run trains
  longer than `max_run_seconds`: it then stops as a cancel does, keeping its best checkpoint.
- The training itself is runner.training_events: a generator of small picklable events that
  runs in the runner thread, or in a forked GPU worker on ZeroGPU (see zerogpu.py). Cancel is a
  file flag, so it reaches either.
- A visitor is shown their newest job only, so that is all the manager keeps of them.
- With a `state_dir`, every change is written there atomically (one JSON per job); at start,
  jobs that were queued or running when the server stopped are marked `interrupted` (their best
  checkpoint, written atomically during the run, stays usable).
Nothing here knows about Gradio.
"""
from __future__ import annotations

import atexit
import contextvars
import copy
import json
import logging
import math
import os
import statistics
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .data import HYMENOPTERA_FILES, SkippedFile, count_images
from .device import describe_device, pick_device
from .errors import UserError
from .runner import CancelFlag, training_events
from .train import EpochRecord, TrainConfig
from .zerogpu import STOP_MARGIN_SECONDS, GpuRefused, training_duration

log = logging.getLogger(__name__)

ACTIVE = ("queued", "preparing", "scanning", "running")  # then: completed, cancelled, failed, interrupted
# Seconds per image (train + val) until a kind of run has been timed here: (from the run's start to
# the end of its first epoch -- scan, decode, feature caching, epoch 1 --, each later epoch). From
# resnet18 on this project's 2-core reference CPU with ants/bees' 397 images (bench/results/RESULTS.md):
# a fine-tune epoch 26.6 s, a fixed-mode forward pass over the set 8.5 s and its later epochs ~0 s
# (features cached); progressive's later epochs are mostly fine-tuning. A GPU and most other
# backbones are faster, so these err late (resnet50, slower, errs early); measured runs replace them.
GUESSED_SECONDS_PER_IMAGE = {"fixed": (0.04, 0.001), "finetune": (0.08, 0.07), "progressive": (0.04, 0.07)}
TIMINGS_KEPT = 50  # per kind of run: the newest measurements
# A job's images before it is scanned, when its folder is not there: only the tutorial's set is
# fetched by the job itself.
UNSEEN_IMAGES = sum(HYMENOPTERA_FILES.values())
PROGRESS_INTERVAL = 1.0  # seconds between progress updates inside a long step


# Runner threads of every manager in this process, with their cancel flags. At exit they are
# cancelled and joined: a thread killed inside torch aborts the interpreter, and a run stopped
# this way keeps its best checkpoint (a restart then reports it as interrupted).
_RUNNERS: list[tuple[threading.Thread, Path]] = []


@atexit.register
def _stop_runners() -> None:
    for runner, flag in _RUNNERS:
        if runner.is_alive():
            CancelFlag(flag).set()
    for runner, _ in _RUNNERS:
        runner.join(timeout=60)


class JobRefused(UserError):
    """A job could not be queued; the message says why and what to do."""


@dataclass
class Job:
    id: int
    owner: str
    config: TrainConfig
    device: str
    submitted: float  # time.time()
    source: str = ""  # the network address it came from (never written to disk); "" when unknown
    signed_in: bool = False
    status: str = "queued"
    version: int = 0  # the manager's change counter when this copy was taken
    started: float | None = None
    finished: float | None = None
    cancel_requested: bool = False
    classes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[SkippedFile] = field(default_factory=list)
    storage: str = ""  # how the run holds its images, and why (Dataset.storage)
    images: int = 0  # the run's train + val images: counted at submit, then the scan's count
    history: list[EpochRecord] = field(default_factory=list)
    epoch_ended: float | None = None  # time.time() when its latest epoch finished
    progress: tuple[str, int, int] | None = None  # (stage, done, total) inside a long step
    checkpoint_path: str | None = None  # set once a best-so-far checkpoint is on disk
    error: str | None = None
    advice: str | None = None  # what to do about `error`, when its source knows (e.g. GPU quota used up)
    # Filled in on snapshots of active jobs (RunTimes): of a queued one,
    queue_position: int | None = None  # 1: next to start
    starts_in: float | None = None  # estimated seconds until it starts
    ahead: str | None = None  # where the run it waits for stands (Job.describe), when it waits for one
    # and of a started one:
    remaining: float | None = None  # estimated seconds until it ends

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def elapsed(self, now: float | None = None) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or now or time.time()) - self.started

    def describe(self) -> str:
        """Where the job stands, in a few words (for refusals and headlines)."""
        if self.status == "queued":
            return "queued" + (f", position {self.queue_position}" if self.queue_position else "")
        if self.history:
            return f"epoch {self.history[-1].epoch} of {self.config.epochs} done"
        return {"preparing": "preparing its dataset", "scanning": "scanning its dataset",
                "running": "in its first epoch"}.get(self.status, self.status)


# -- how long runs take ----------------------------------------------------------------------------

class RunTimes:
    """Seconds per image of each kind of run, measured on this server from the epochs runs finish
    (and those of the runs on record at start), and from them how long a run takes and how long
    one has left. A run's work is its images times its epochs; its first epoch costs more (the
    dataset is decoded, features are cached), so it is timed apart from the later ones."""

    def __init__(self):
        self._first: dict[tuple, deque[float]] = {}
        self._later: dict[tuple, deque[float]] = {}

    @staticmethod
    def kind(config: TrainConfig) -> tuple:
        # What sets the cost of an image: the backbone, its input size, the mode, and how much of it trains.
        return config.arch, config.image_size, config.mode, 0 if config.mode == "fixed" else config.train_blocks

    def learn(self, job: Job, records: list[EpochRecord]) -> None:
        """Time `records`: epochs of `job` that just finished (or all of a job on record)."""
        if not job.images or job.config.resume_from:  # a resumed run replays epochs it did not time
            return
        kind = self.kind(job.config)
        for record in records:
            if record.epoch > 1:
                self._later.setdefault(kind, deque(maxlen=TIMINGS_KEPT)).append(record.seconds / job.images)
            elif job.started is not None and job.epoch_ended is not None:
                # The first epoch ended when the latest did, less the epochs since.
                first = job.epoch_ended - job.started - sum(r.seconds for r in job.history[1:])
                self._first.setdefault(kind, deque(maxlen=TIMINGS_KEPT)).append(first / job.images)

    def per_image(self, config: TrainConfig) -> tuple[float, float]:
        """(start to the end of the first epoch, each later epoch), in seconds per image."""
        kind, guess = self.kind(config), GUESSED_SECONDS_PER_IMAGE[config.mode]
        return (statistics.median(self._first[kind]) if kind in self._first else guess[0],
                statistics.median(self._later[kind]) if kind in self._later else guess[1])

    def duration(self, job: Job) -> float:
        """Seconds a run of `job` takes from its start: its work at the measured rates."""
        first, later = self.per_image(job.config)
        return job.images * (first + later * (job.config.epochs - 1))

    def remaining(self, job: Job, now: float) -> float:
        """Seconds until `job` ends. Its own epochs tell it best once it has run two (the first
        costs more: after it alone, the measured later rate, else its time, which errs late); an
        epoch that runs late never makes the epochs after it free, so only a run in its last
        epoch can reach 0."""
        if job.started is None:
            return self.duration(job)
        first, later = self.per_image(job.config)
        done, epochs = len(job.history), job.config.epochs
        if done >= epochs or job.cancel_requested:
            return 0.0  # saving its model, or stopping after the current batch
        if done >= 2 or (done == 1 and self.kind(job.config) not in self._later):
            per_epoch = job.history[-1].seconds
        else:
            per_epoch = later * job.images
        if done == 0:
            current = first * job.images - (now - job.started)
        else:
            current = per_epoch - (now - (job.epoch_ended or now))
        return max(0.0, current) + per_epoch * (epochs - done - 1)


# -- the manager -----------------------------------------------------------------------------------

class JobManager:
    def __init__(self, max_running: int = 1, max_queued: int = 10, state_dir: str | os.PathLike | None = None,
                 request_bound: bool = False, max_run_seconds: float | None = None, max_per_source: int = 0,
                 signed_in_places: int = 0):
        self.max_running = max_running
        self.max_queued = max_queued
        self.request_bound = request_bound
        self.max_run_seconds = max_run_seconds  # None or 0: no limit
        self.max_per_source = max_per_source  # 0: no limit
        self.signed_in_places = signed_in_places
        self._state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="bees_ants-jobs-"))
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._changed = threading.Condition()
        self._jobs: dict[str, Job] = {}  # each visitor's newest job, by owner: all a visitor is shown
        self._last_id = 0
        self._contexts: dict[int, contextvars.Context] = {}
        self._version = 0
        self._prepares: dict[int, Callable[[], object] | None] = {}
        self.run_times = RunTimes()
        with self._changed:
            self._restore()

    # -- what a visitor can do --------------------------------------------------------------------

    def submit(self, owner: str, config: TrainConfig, prepare: Callable[[], object] | None = None,
               source: str = "", signed_in: bool = False) -> Job:
        """Queue a job for `owner`, who asks from network address `source`; it starts by itself when
        a runner is free. `prepare` runs first in the runner (e.g. a dataset download). Raises
        JobRefused when the visitor already has a job, or the queue has no place for them."""
        images = count_images(config.data_dir) or UNSEEN_IMAGES  # the queue's estimate needs it now
        with self._changed:
            mine = self._active_job(owner)
            if mine is not None:
                self._fill_estimates()
                raise JobRefused(f"you already have a training job ({mine.describe()}); "
                                 "wait for it to finish or cancel it first")
            self._check_fair_share(source, signed_in)
            previous = self._jobs.get(owner)
            self._last_id += 1
            job = Job(id=self._last_id, owner=owner, config=config,
                      device=describe_device(pick_device(config.device)) if not self.request_bound else "ZeroGPU",
                      submitted=time.time(), source=source, signed_in=signed_in, images=images)
            if previous is not None:  # its record goes; the new job replaces it
                self._record_path(previous).unlink(missing_ok=True)
            self._jobs[owner] = job
            self._prepares[job.id] = prepare
            # On ZeroGPU the GPU is scheduled against the request that asked for it: the runner
            # thread carries that request's context (spaces reads the request from it).
            self._contexts[job.id] = contextvars.copy_context()
            self._bump(job)
            self._dispatch()
            return self._snapshot(job)

    def cancel(self, owner: str) -> bool:
        """Stop `owner`'s job: a queued one leaves the queue, a running one stops after its
        current batch. False when the visitor has nothing to cancel; other visitors' jobs are
        never touched."""
        with self._changed:
            job = self._active_job(owner)
            if job is None:
                return False
            job.cancel_requested = True
            if job.status == "queued":
                job.status, job.finished = "cancelled", time.time()
                self._dispatch()
            else:
                CancelFlag(self._cancel_path(job)).set()
            self._bump(job)
            return True

    def latest(self, owner: str) -> Job | None:
        """A copy of the visitor's newest job (with its queue position while it waits)."""
        with self._changed:
            job = self._jobs.get(owner)
            return self._snapshot(job) if job else None

    def forget(self, owner: str) -> None:
        """Drop `owner`'s finished job and its record (their things expired: housekeeping.py)."""
        with self._changed:
            job = self._jobs.get(owner)
            if job is not None and not job.active:
                del self._jobs[owner]
                self._record_path(job).unlink(missing_ok=True)

    def follow(self, owner: str, seen_version: int = -1, timeout: float = 10.0) -> Iterator[Job | None]:
        """Yield the visitor's job now if it changed since `seen_version`, then after every change
        that concerns it (its own progress, or the queue moving ahead of it), and return once it is
        over. `timeout` bounds each wait, so a caller can notice an abandoned follower."""
        drawn = "nothing"  # what the caller shows: (version, queue position), None for "no job"
        while True:
            with self._changed:
                job = self._jobs.get(owner)
                snapshot = self._snapshot(job) if job else None
                version = self._version
            view = None if snapshot is None else (snapshot.version, snapshot.queue_position)
            if drawn == "nothing" and (seen_version >= 0 and (view is None or snapshot.version <= seen_version)):
                drawn = view  # the caller already shows this state
            if view != drawn:
                drawn = view
                yield snapshot
            if snapshot is None or not snapshot.active:
                return
            with self._changed:
                self._changed.wait_for(lambda: self._version != version, timeout)

    # -- internals (call with the lock held) ------------------------------------------------------

    def _check_fair_share(self, source: str, signed_in: bool) -> None:
        """Refuse a job that would take more than its source's share of the queue (see the module doc)."""
        sign_in = " or sign in with Hugging Face" if self.signed_in_places else ""
        if not signed_in and source and self.max_per_source:
            same = sum(j.active and not j.signed_in and j.source == source for j in self._jobs.values())
            if same >= self.max_per_source:
                raise JobRefused(f"{same} training job(s) from your network address are already queued or running, "
                                 f"the most one address may have; wait for one to finish{sign_in}")
        queued = [j for j in self._jobs.values() if j.status == "queued"]
        if len(queued) >= self.max_queued:
            raise JobRefused(f"the training queue is full ({self.max_queued} jobs waiting); "
                             "try again in a few minutes")
        anonymous_places = self.max_queued - self.signed_in_places
        if not signed_in and sum(not j.signed_in for j in queued) >= anonymous_places:
            raise JobRefused(f"the training queue's {anonymous_places} places for anonymous visitors are taken "
                             f"({self.signed_in_places} more are kept for signed-in visitors); "
                             f"try again in a few minutes{sign_in}")

    def _time_limit(self, job: Job) -> tuple[float | None, str]:
        """How long the run may train, and what the visitor is told if it stops there: this
        server's cap on one run, or on ZeroGPU the GPU time the run asked for, whichever is shorter
        (None: no limit)."""
        limits = []
        if self.max_run_seconds:
            cap = self.max_run_seconds
            span = f"{cap / 60:g}-minute" if cap >= 60 and cap % 60 == 0 else f"{cap:g}-second"
            limits.append((cap, f"stopped at the {span} cap on one run; best checkpoint kept"))
        if self.request_bound:  # the run must end within the GPU time it asked for: it stops itself first
            gpu = training_duration(job.config) - STOP_MARGIN_SECONDS
            limits.append((gpu, f"stopped after {gpu:.0f} s, the GPU time this Space gives one run; "
                                "the best checkpoint so far is kept"))
        return min(limits, default=(None, ""))

    def _active_job(self, owner: str) -> Job | None:
        job = self._jobs.get(owner)
        return job if job is not None and job.active else None

    def _snapshot(self, job: Job) -> Job:
        self._fill_estimates()
        return copy.deepcopy(job)

    def _bump(self, job: Job) -> None:
        # Every change gets a new version, is written to disk and wakes all followers.
        self._version += 1
        job.version = self._version
        self._save(job)
        self._changed.notify_all()

    def _update(self, job: Job, **changes) -> None:
        with self._changed:
            for name, value in changes.items():
                setattr(job, name, value)
            self._bump(job)

    def _dispatch(self) -> None:
        """Start queued jobs, oldest first, while runner slots are free."""
        running = sum(j.status != "queued" and j.active for j in self._jobs.values())
        for job in sorted((j for j in self._jobs.values() if j.status == "queued"), key=lambda j: j.id):
            if running >= self.max_running:
                break
            running += 1
            prepare = self._prepares.pop(job.id, None)
            job.status, job.started = ("preparing" if prepare else "scanning"), time.time()
            self._bump(job)
            context = self._contexts.pop(job.id)
            runner = threading.Thread(target=context.run, args=(self._run, job, prepare),
                                      name=f"training-job-{job.id}", daemon=True)
            _RUNNERS[:] = [(r, flag) for r, flag in _RUNNERS if r.is_alive()] + [(runner, self._cancel_path(job))]
            runner.start()

    def _fill_estimates(self) -> None:
        """Estimated end of every started job, and position and estimated start of every queued
        one: each waits for the earliest of the runner slots to free up, given what is running
        and what is queued ahead of it; one waiting for a running job is told where that stands."""
        now, cap = time.time(), self.max_run_seconds or math.inf
        for job in self._jobs.values():
            job.queue_position = job.starts_in = job.ahead = job.remaining = None
        running = [j for j in self._jobs.values() if j.active and j.status != "queued"]
        for job in running:
            job.remaining = min(self.run_times.remaining(job, now), max(0.0, cap - job.elapsed(now)))
        slots = [(j.remaining, j.describe()) for j in running] + [(0.0, None)] * (self.max_running - len(running))
        queued = sorted((j for j in self._jobs.values() if j.status == "queued"), key=lambda j: j.id)
        for position, job in enumerate(queued, start=1):
            slots.sort(key=lambda slot: slot[0])
            (free_in, ahead), *others = slots
            job.queue_position, job.starts_in, job.ahead = position, free_in, ahead
            slots = [(free_in + min(self.run_times.duration(job), cap), None), *others]

    def _cancel_path(self, job: Job) -> Path:
        return self._state_dir / f"job-{job.id}.cancel"

    # -- persistence -------------------------------------------------------------------------------

    def _save(self, job: Job) -> None:
        record = asdict(job)
        for estimate in ("queue_position", "starts_in", "ahead", "remaining"):  # of the moment: not kept
            record.pop(estimate)
        record.pop("source")  # an address is needed only while the job is active; not kept on disk
        path = self._record_path(job)
        # A name of its own for each save: another server process on the same folder (a restart
        # before the old one has gone) may be saving the same job at the same moment.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self._state_dir)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record))
        os.replace(tmp, path)  # a crash mid-write leaves the previous version, never half a file

    def _record_path(self, job: Job) -> Path:
        return self._state_dir / f"job-{job.id}.json"

    def _restore(self) -> None:
        # A crash mid-save leaves a temporary file. One written in the last minute may be a save
        # under way in another server process (a restart before the old process has gone): removing
        # it would make that save, and the job it records, fail.
        cutoff = time.time() - 60
        for tmp in self._state_dir.glob(".job-*.json.*.tmp"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except FileNotFoundError:  # its save has just finished
                pass
        for path in sorted(self._state_dir.glob("job-*.json")):
            try:
                job = _job_from_dict(json.loads(path.read_text()))
            except (ValueError, TypeError, KeyError) as e:
                log.warning("ignoring unreadable job record %s: %s", path, e)
                continue
            self._jobs[job.owner] = job
            self._last_id = max(self._last_id, job.id)
            self.run_times.learn(job, job.history)  # the seconds per image of the runs before this start
        for job in self._jobs.values():
            if job.active:  # the server stopped under it
                was = job.describe()
                job.status, job.finished = "interrupted", job.finished or time.time()
                job.error = f"the server restarted while this job was {was}"
                self._bump(job)
            Path(self._cancel_path(job)).unlink(missing_ok=True)

    # -- the runner thread -----------------------------------------------------------------------

    def _run(self, job: Job, prepare) -> None:
        outcome = {"status": "failed", "error": "the training thread stopped unexpectedly"}
        try:
            outcome = {"status": self._train(job, prepare)}
        except GpuRefused as e:
            outcome = {"status": "failed", "error": e.what, "advice": e.advice}
        except UserError as e:
            outcome = {"status": "failed", "error": str(e)}
        except Exception as e:
            log.exception("training job %d failed", job.id)
            outcome = {"status": "failed", "error": f"unexpected error: {type(e).__name__}: {e}"}
        finally:  # whatever happened, the job ends and frees its slot for the next in the queue
            with self._changed:
                for name, value in {"finished": time.time(), "progress": None, **outcome}.items():
                    setattr(job, name, value)
                self._bump(job)
                self._dispatch()
            Path(self._cancel_path(job)).unlink(missing_ok=True)

    def _train(self, job: Job, prepare) -> str:
        if prepare is not None:
            prepare()
            self._update(job, status="scanning")
        status, shown_progress = "failed", 0.0
        time_limit, stopped_there = self._time_limit(job)
        for event in training_events(job.config, str(self._cancel_path(job)), time_limit):
            kind = event[0]
            if kind == "scanned":
                _, classes, counts, skipped, storage = event
                self._update(job, status="running", classes=classes, counts=counts, skipped=skipped, storage=storage,
                             images=sum(n for split in counts.values() for n in split.values()))
            elif kind == "progress":
                _, stage, done, total = event
                # Every open page redraws on a change: a few progress updates a second at most,
                # plus where a step starts (0) or ends, so a page always shows the step running.
                if time.monotonic() - shown_progress >= PROGRESS_INTERVAL or done in (0, total):
                    shown_progress = time.monotonic()
                    self._update(job, progress=(stage, done, total))
            elif kind == "epoch":
                _, record, checkpoint_path = event
                # The best-so-far checkpoint is on disk by the time an epoch's record arrives.
                with self._changed:
                    self._update(job, history=job.history + [record], checkpoint_path=checkpoint_path, progress=None,
                                 epoch_ended=time.time())
                    self.run_times.learn(job, [record])
            elif kind == "time_limit":
                self._update(job, cancel_requested=True, error=stopped_there)
            elif kind == "failed":
                raise UserError(event[1])
            elif kind == "end":
                status = event[1]
        return status


def _job_from_dict(d: dict) -> Job:
    d = dict(d)
    d["config"] = TrainConfig(**d["config"])
    d["history"] = [EpochRecord(**r) for r in d["history"]]
    d["skipped"] = [SkippedFile(**s) for s in d["skipped"]]
    d["progress"] = tuple(d["progress"]) if d.get("progress") else None
    return Job(**d)
