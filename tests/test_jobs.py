"""The training job manager: per-visitor jobs, a queue with positions, cancel, failures, restarts."""
import threading
from pathlib import Path

import pytest

from bees_ants import jobs as jobs_mod, runner
from bees_ants.checkpoint import load_checkpoint
from bees_ants.data import DatasetError
from bees_ants.jobs import Job, JobManager, JobRefused
from bees_ants.train import EpochRecord
from conftest import COLOURS, small_config, write_image

ALICE, BOB, CAROL = "alice-key", "bob-key", "carol-key"


def run_to_end(manager, owner=ALICE, seen=-1):
    """Every snapshot `follow` yields for `owner`, until their job is over."""
    return list(manager.follow(owner, seen))


def first_epoch(manager, owner):
    """Follow `owner`'s job until its first epoch is done."""
    for job in manager.follow(owner):
        if job.history:
            return job
    raise AssertionError("the job ended before its first epoch")


def test_job_runs_in_background_and_followers_see_every_stage(tiny_dataset, tmp_path):
    manager = JobManager(state_dir=tmp_path / "jobs")
    assert manager.latest(ALICE) is None and not manager.cancel(ALICE)
    started = manager.submit(ALICE, small_config(tiny_dataset, tmp_path))
    assert started.owner == ALICE and started.active
    snapshots = run_to_end(manager)
    final = snapshots[-1]
    assert final.status == "completed" and not final.active and final.error is None
    assert [r.epoch for r in final.history] == [1, 2, 3]
    assert final.counts == {"train": {"ants": 8, "bees": 8}, "val": {"ants": 4, "bees": 4}}
    assert Path(final.checkpoint_path).is_file() and final.finished is not None
    versions = [s.version for s in snapshots]
    assert versions == sorted(set(versions))  # each yield is a newer state
    assert any(s.status == "running" for s in snapshots[:-1])  # the scan result came before the end
    # A late viewer that already drew the final state gets nothing new and returns at once.
    assert run_to_end(manager, seen=final.version) == []
    assert manager.latest(ALICE).version == final.version
    assert manager.latest(BOB) is None  # nobody else sees it


def test_a_second_visitor_queues_with_a_position_and_starts_when_the_first_is_cancelled(tiny_dataset, tmp_path):
    manager = JobManager(max_running=1, state_dir=tmp_path / "jobs")
    manager.submit(ALICE, small_config(tiny_dataset, tmp_path, mode="finetune", epochs=500))
    first_epoch(manager, ALICE)
    queued = manager.submit(BOB, small_config(tiny_dataset, tmp_path, epochs=2))
    assert queued.status == "queued" and queued.queue_position == 1
    assert queued.starts_in > 0  # Alice's run is far from done
    # One job per visitor: a second click is refused and says where the first one stands.
    with pytest.raises(JobRefused, match=r"you already have a training job \(queued, position 1\)"):
        manager.submit(BOB, small_config(tiny_dataset, tmp_path))
    with pytest.raises(JobRefused, match=r"you already have a training job \(epoch \d+ of 500 done\)"):
        manager.submit(ALICE, small_config(tiny_dataset, tmp_path))
    # Cancel is per visitor: Carol has nothing to cancel, and Bob's cancel would only touch Bob's.
    assert not manager.cancel(CAROL)
    assert manager.latest(ALICE).status == "running" and not manager.latest(ALICE).cancel_requested
    assert manager.cancel(ALICE)
    alice = run_to_end(manager, ALICE)[-1]
    assert alice.status == "cancelled" and len(alice.history) < 500 and Path(alice.checkpoint_path).is_file()
    bob = run_to_end(manager, BOB)
    assert [s.status for s in bob][-1] == "completed"  # started by itself once the runner was free
    assert len(bob[-1].history) == 2


def test_queue_is_bounded_and_a_queued_job_can_be_cancelled_before_it_starts(tiny_dataset, tmp_path):
    manager = JobManager(max_running=1, max_queued=1, state_dir=tmp_path / "jobs")
    manager.submit(ALICE, small_config(tiny_dataset, tmp_path, mode="finetune", epochs=500))
    manager.submit(BOB, small_config(tiny_dataset, tmp_path))
    with pytest.raises(JobRefused, match=r"queue is full \(1 jobs waiting\)"):
        manager.submit(CAROL, small_config(tiny_dataset, tmp_path))
    assert manager.cancel(BOB)
    bob = manager.latest(BOB)
    assert bob.status == "cancelled" and bob.started is None and bob.history == []
    manager.submit(CAROL, small_config(tiny_dataset, tmp_path))  # room again
    assert manager.latest(CAROL).queue_position == 1
    manager.cancel(CAROL)
    manager.cancel(ALICE)
    assert run_to_end(manager, ALICE)[-1].status == "cancelled"


def test_two_runners_train_two_visitors_at_once(tiny_dataset, tmp_path):
    manager = JobManager(max_running=2, state_dir=tmp_path / "jobs")
    manager.submit(ALICE, small_config(tiny_dataset, tmp_path, epochs=2))
    bob = manager.submit(BOB, small_config(tiny_dataset, tmp_path, epochs=2))
    assert bob.status != "queued" and bob.queue_position is None
    assert run_to_end(manager, ALICE)[-1].status == "completed"
    assert run_to_end(manager, BOB)[-1].status == "completed"


def test_a_restart_reports_running_jobs_as_interrupted_and_keeps_their_checkpoint(tiny_dataset, tmp_path):
    state = tmp_path / "jobs"
    before = JobManager(state_dir=state)
    before.submit(ALICE, small_config(tiny_dataset, tmp_path, mode="finetune", epochs=500))
    running = first_epoch(before, ALICE)
    after = JobManager(state_dir=state)  # a new server process reading the same state folder
    job = after.latest(ALICE)
    assert job.status == "interrupted" and not job.active
    assert "restarted while this job was" in job.error
    assert job.checkpoint_path == running.checkpoint_path
    assert load_checkpoint(job.checkpoint_path).meta["history"]  # the best-so-far model is whole
    assert after.latest(BOB) is None
    after.submit(ALICE, small_config(tiny_dataset, tmp_path, epochs=1))  # an interrupted job does not block
    assert run_to_end(after, ALICE)[-1].status == "completed"
    before.cancel(ALICE)  # stop the old "server"'s thread
    assert run_to_end(before, ALICE)[-1].status == "cancelled"


def test_dataset_error_in_thread_becomes_a_failed_job(tmp_path):
    for split in ("train", "val"):
        write_image(tmp_path / "one" / split / "ants" / "a.png", COLOURS["ants"])
    manager = JobManager(state_dir=tmp_path / "jobs")
    manager.submit(ALICE, small_config(tmp_path / "one", tmp_path))
    final = run_to_end(manager)[-1]
    assert final.status == "failed" and "at least 2" in final.error
    assert final.checkpoint_path is None


def test_prepare_runs_first_in_the_thread_and_its_error_is_reported(tmp_path):
    def offline():
        raise DatasetError("could not be downloaded (offline)")

    manager = JobManager(state_dir=tmp_path / "jobs")
    manager.submit(ALICE, small_config(tmp_path / "missing", tmp_path), prepare=offline)
    final = run_to_end(manager)[-1]
    assert final.status == "failed" and final.error == "could not be downloaded (offline)"


def test_unexpected_exception_is_captured_and_manager_keeps_working(tiny_dataset, tmp_path, monkeypatch):
    class Broken:
        def __init__(self, *args, **kwargs):
            pass

        def __iter__(self):
            raise RuntimeError("boom")

    monkeypatch.setattr(runner, "TrainingRun", Broken)
    manager = JobManager(state_dir=tmp_path / "jobs")
    manager.submit(ALICE, small_config(tiny_dataset, tmp_path))
    final = run_to_end(manager)[-1]
    assert final.status == "failed" and final.error == "unexpected error: RuntimeError: boom"
    monkeypatch.undo()
    manager.submit(ALICE, small_config(tiny_dataset, tmp_path, epochs=1))
    assert run_to_end(manager)[-1].status == "completed"


def test_a_time_limit_stops_the_run_like_a_cancel_and_says_why(tiny_dataset, tmp_path, monkeypatch):
    # ZeroGPU gives a run a fixed GPU budget; the run stops itself before it runs out.
    monkeypatch.setattr(jobs_mod, "training_duration", lambda config: jobs_mod.STOP_MARGIN_SECONDS + 0.001)
    manager = JobManager(state_dir=tmp_path / "jobs", request_bound=True)
    manager.submit(ALICE, small_config(tiny_dataset, tmp_path, mode="finetune", epochs=500))
    final = run_to_end(manager)[-1]
    assert final.status == "cancelled" and len(final.history) < 500
    assert "GPU time this Space gives one run" in final.error


def test_eta_comes_from_the_last_epoch_time(tmp_path):
    def record(epoch, seconds):
        return EpochRecord(epoch, 10, 0.5, 0.5, 0.5, 0.5, 0.001, seconds, 0.5, 1)

    job = Job(id=1, owner=ALICE, config=small_config(tmp_path, tmp_path, epochs=10), device="cpu", submitted=90.0,
              started=100.0, status="running")
    assert job.eta() is None  # nothing to go on before the first epoch
    job.history = [record(1, 30.0), record(2, 2.0)]  # fixed mode: features cached after the first views
    assert job.eta() == 2.0 * 8
    assert job.elapsed(now=160.0) == 60.0
    job.status, job.finished = "completed", 150.0
    assert job.eta() is None and job.elapsed(now=999.0) == 50.0


# -- fair share ------------------------------------------------------------------------------------

HOME, ELSEWHERE = "203.0.113.5", "198.51.100.7"


def holding_the_runner(manager, tmp_path, hold: threading.Event, owner="holder-key"):
    """A job that occupies the runner, preparing until `hold` is set, then fails (no dataset): the
    queue's rules can be checked without training anything."""
    manager.submit(owner, small_config(tmp_path / "missing", tmp_path), prepare=hold.wait, source=ELSEWHERE)
    return owner


def test_one_address_cannot_fill_the_queue(tiny_dataset, tmp_path):
    manager = JobManager(max_running=1, max_queued=10, max_per_source=2, state_dir=tmp_path / "jobs")
    hold = threading.Event()
    holder = holding_the_runner(manager, tmp_path, hold)
    for visitor in ("api-client-1", "api-client-2"):  # a new API client is a new visitor...
        manager.submit(visitor, small_config(tiny_dataset, tmp_path), source=HOME)
    with pytest.raises(JobRefused, match=r"2 training job\(s\) from your network address are already queued"):
        manager.submit("api-client-3", small_config(tiny_dataset, tmp_path), source=HOME)  # ...but not a new address
    assert manager.latest("api-client-3") is None
    manager.submit(BOB, small_config(tiny_dataset, tmp_path), source=ELSEWHERE)  # others still get in
    manager.submit(CAROL, small_config(tiny_dataset, tmp_path), source=HOME, signed_in=True)  # and accounts
    assert manager.cancel("api-client-1")  # a place for that address again
    manager.submit("api-client-3", small_config(tiny_dataset, tmp_path), source=HOME)
    for owner in ("api-client-2", "api-client-3", BOB, CAROL):
        assert manager.cancel(owner)
    hold.set()
    assert run_to_end(manager, holder)[-1].status == "failed"


def test_places_kept_for_signed_in_visitors(tiny_dataset, tmp_path):
    manager = JobManager(max_running=1, max_queued=3, signed_in_places=1, state_dir=tmp_path / "jobs")
    hold = threading.Event()
    holder = holding_the_runner(manager, tmp_path, hold)
    manager.submit(ALICE, small_config(tiny_dataset, tmp_path), source=HOME)
    manager.submit(BOB, small_config(tiny_dataset, tmp_path), source=ELSEWHERE)
    with pytest.raises(JobRefused, match=r"2 places for anonymous visitors are taken.*sign in with Hugging Face"):
        manager.submit(CAROL, small_config(tiny_dataset, tmp_path), source="192.0.2.1")
    signed_in = manager.submit("hf-dave-key", small_config(tiny_dataset, tmp_path), source="192.0.2.1", signed_in=True)
    assert signed_in.queue_position == 3
    with pytest.raises(JobRefused, match=r"queue is full \(3 jobs waiting\)"):
        manager.submit("hf-erin-key", small_config(tiny_dataset, tmp_path), source="192.0.2.2", signed_in=True)
    for owner in (ALICE, BOB, "hf-dave-key"):
        assert manager.cancel(owner)
    hold.set()
    assert run_to_end(manager, holder)[-1].status == "failed"
    # The address is for the queue only: it is not written with the job's record.
    assert not any(HOME in p.read_text() for p in (tmp_path / "jobs").glob("job-*.json"))


def test_the_run_time_cap_stops_a_run_like_a_cancel_and_says_why(tiny_dataset, tmp_path):
    manager = JobManager(max_run_seconds=0.001, state_dir=tmp_path / "jobs")
    manager.submit(ALICE, small_config(tiny_dataset, tmp_path, mode="finetune", epochs=500))
    final = run_to_end(manager)[-1]
    assert final.status == "cancelled" and len(final.history) < 500
    assert final.error == "stopped at the 0.001-second cap on one run; best checkpoint kept"
