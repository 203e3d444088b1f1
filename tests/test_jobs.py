"""The training job manager: per-visitor jobs, a queue with positions, cancel, failures, restarts."""
import threading
from pathlib import Path

import pytest

from bees_ants import jobs as jobs_mod, runner
from bees_ants.checkpoint import load_checkpoint
from bees_ants.data import DatasetError
from bees_ants.jobs import GUESSED_SECONDS_PER_IMAGE, Job, JobManager, JobRefused, RunTimes
from bees_ants.train import EpochRecord
from bees_ants.views.training import status_markdown
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


def test_a_restart_removes_a_crashed_save_but_not_one_under_way(tmp_path):
    import os
    import time
    state = tmp_path / "jobs"
    state.mkdir()
    crashed, under_way = state / ".job-1.json.k2j4_x.tmp", state / ".job-2.json.8ehw0q.tmp"
    crashed.write_text("{half")
    an_hour_ago = time.time() - 3600
    os.utime(crashed, (an_hour_ago, an_hour_ago))
    under_way.write_text("{being written by the server before this one")
    JobManager(state_dir=state)
    assert not crashed.exists() and under_way.exists()


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


# -- the queue's estimates: made-up job records, no training ----------------------------------------

def record(epoch, seconds, epochs=10):
    return EpochRecord(epoch, epochs, 0.5, 0.5, 0.5, 0.5, 0.001, seconds, 0.5, 1)


def made_up_job(tmp_path, images, epochs, status="queued", **fields):
    config = small_config(tmp_path, tmp_path, mode=fields.pop("mode", "finetune"), arch=fields.pop("arch", "resnet18"),
                          epochs=epochs)
    return Job(id=1, owner=ALICE, config=config, device="cpu", submitted=0.0, status=status, images=images, **fields)


def test_a_run_is_estimated_from_its_images_and_epochs_at_the_rates_measured_here(tmp_path):
    times = RunTimes()
    queued = made_up_job(tmp_path, images=400, epochs=10)
    first, later = GUESSED_SECONDS_PER_IMAGE["finetune"]  # before any run of its kind
    assert times.duration(queued) == pytest.approx(400 * (first + 9 * later))
    # A finished fine-tune of 200 images: 30 s from its start to the end of its first epoch, 20 s each later one.
    finished = made_up_job(tmp_path, images=200, epochs=3, status="completed", started=1000.0, epoch_ended=1070.0,
                           history=[record(1, 25.0), record(2, 20.0), record(3, 20.0)])
    times.learn(finished, finished.history)
    assert times.per_image(queued.config) == pytest.approx((30 / 200, 20 / 200))
    assert times.duration(queued) == pytest.approx(2 * 30 + 2 * 20 * 9)  # twice the images: twice the time
    # Rates are per backbone and mode: the fine-tune's say nothing about another backbone or the fixed mode.
    for other in ({"arch": "mobilenet_v2"}, {"mode": "fixed"}):
        config = made_up_job(tmp_path, 400, 10, **other).config
        assert times.per_image(config) == GUESSED_SECONDS_PER_IMAGE[config.mode]
    # A resumed run replays epochs it did not time: nothing is learned from it.
    resumed = made_up_job(tmp_path, images=200, epochs=3, started=0.0, epoch_ended=1.0, history=[record(2, 0.5)])
    resumed.config.resume_from = "earlier.pt"
    times.learn(resumed, resumed.history)
    assert times.per_image(queued.config) == pytest.approx((30 / 200, 20 / 200))


def test_the_run_ahead_counts_down_by_its_own_epochs_and_not_to_zero_before_its_last(tmp_path):
    times = RunTimes()
    first, later = GUESSED_SECONDS_PER_IMAGE["finetune"]
    running = made_up_job(tmp_path, images=100, epochs=5, status="running", started=0.0)
    assert times.remaining(running, now=2.0) == pytest.approx(100 * first - 2 + 4 * 100 * later)
    assert running.elapsed(now=2.0) == 2.0
    # Far past what its first epoch should have taken: the four epochs after it still take their time.
    assert times.remaining(running, now=10_000.0) == pytest.approx(4 * 100 * later)
    # One epoch done, in 40 s: before any later epoch of its kind was timed here, that time stands for the next ones.
    running.history, running.epoch_ended = [record(1, 40.0, 5)], 40.0
    assert times.remaining(running, now=50.0) == pytest.approx(30 + 3 * 40)
    # Two epochs done, the second in 12 s: its own time rules; 5 s into the third.
    running.history, running.epoch_ended = [record(1, 40.0, 5), record(2, 12.0, 5)], 100.0
    assert times.remaining(running, now=105.0) == pytest.approx(7 + 2 * 12)
    assert times.remaining(running, now=500.0) == pytest.approx(2 * 12)  # the third runs late
    # Only in its last epoch can it run out: then it is about to end.
    running.history += [record(3, 12.0, 5), record(4, 12.0, 5)]
    assert times.remaining(running, now=500.0) == 0.0


def test_a_queued_job_is_told_its_estimated_start_and_where_the_run_ahead_stands(tiny_dataset, tmp_path):
    manager = JobManager(max_running=1, state_dir=tmp_path / "jobs")
    hold = threading.Event()
    holder = holding_the_runner(manager, tmp_path, hold)  # its folder is missing: counted as the tutorial's set
    queued = manager.submit(BOB, small_config(tiny_dataset, tmp_path, epochs=2))
    assert queued.images == 24 and queued.ahead == "preparing its dataset"
    first, later = GUESSED_SECONDS_PER_IMAGE["fixed"]
    assert 0 < queued.starts_in <= jobs_mod.UNSEEN_IMAGES * (first + later * 2)  # the holder's 3 epochs
    # The page of the run ahead shows the same estimate: the time it has left is when Bob's starts.
    assert manager.latest(holder).remaining == pytest.approx(manager.latest(BOB).starts_in, abs=5.0)
    line = status_markdown(queued)
    assert "Queued: position 1 · next to start · starts in about" in line
    assert "The run ahead of yours: preparing its dataset." in line
    carol = manager.submit(CAROL, small_config(tiny_dataset, tmp_path, epochs=2))
    assert carol.queue_position == 2 and carol.ahead is None  # it waits for Bob's, which has not started
    assert carol.starts_in == pytest.approx(queued.starts_in + manager.run_times.duration(queued), abs=1.0)
    for owner in (BOB, CAROL):
        manager.cancel(owner)
    hold.set()
    assert run_to_end(manager, holder)[-1].status == "failed"


def test_a_start_that_is_due_says_any_moment_now_never_0_00(tmp_path):
    job = made_up_job(tmp_path, images=100, epochs=2, queue_position=1, starts_in=0.0, ahead="epoch 5 of 5 done")
    line = status_markdown(job)
    assert "starts any moment now" in line and "0:00" not in line
    assert "The run ahead of yours: epoch 5 of 5 done." in line
    job.starts_in = 95.0
    assert "starts in about 1:35 (estimated)" in status_markdown(job)


def test_the_rates_of_runs_on_record_survive_a_restart(tiny_dataset, tmp_path):
    before = JobManager(state_dir=tmp_path / "jobs")
    # At the default size, so that the epochs outweigh the checkpoint saves worked back out of the first.
    before.submit(ALICE, small_config(tiny_dataset, tmp_path, epochs=2, image_size=None))
    finished = run_to_end(before)[-1]
    assert finished.images == 24 and finished.epoch_ended is not None
    after = JobManager(state_dir=tmp_path / "jobs")  # a new server process reading the same state folder
    (first, later), (live_first, live_later) = (m.run_times.per_image(finished.config) for m in (after, before))
    assert later == live_later == finished.history[1].seconds / 24
    # The first epoch's end, worked back from the last one's: the same but for the checkpoint saves since.
    assert first == pytest.approx(live_first, rel=0.25) and first != GUESSED_SECONDS_PER_IMAGE["fixed"][0]


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
