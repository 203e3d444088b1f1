"""The training job manager: one background job, followed by snapshots; busy, cancel, failures."""
from pathlib import Path

import pytest

from bees_ants import jobs as jobs_mod
from bees_ants.data import DatasetError
from bees_ants.jobs import Job, JobBusy, JobManager
from bees_ants.train import EpochRecord
from conftest import COLOURS, small_config, write_image


def run_to_end(manager, seen=-1):
    """Every snapshot `follow` yields, until the job is over."""
    return list(manager.follow(seen))


def test_job_runs_in_background_and_followers_see_every_stage(tiny_dataset, tmp_path):
    manager = JobManager()
    assert manager.snapshot() is None and not manager.cancel()
    started = manager.start(small_config(tiny_dataset, tmp_path))
    assert started.status == "scanning" and started.active  # no prepare step: straight to the scan
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
    assert run_to_end(manager, final.version) == []
    assert manager.snapshot().version == final.version


def test_second_start_is_refused_while_running_and_cancel_keeps_best_checkpoint(tiny_dataset, tmp_path):
    manager = JobManager()
    # Fine-tuning for many epochs: it is certainly still running when we act on its first record.
    manager.start(small_config(tiny_dataset, tmp_path, mode="finetune", epochs=500))
    for job in manager.follow():
        if job.history:
            break
    with pytest.raises(JobBusy, match=r"already running \(epoch \d+ of 500 done\)"):
        manager.start(small_config(tiny_dataset, tmp_path))
    assert manager.snapshot().config.epochs == 500  # the running job is untouched
    assert manager.cancel()
    assert manager.snapshot().cancel_requested
    final = run_to_end(manager)[-1]
    assert final.status == "cancelled" and len(final.history) < 500
    assert Path(final.checkpoint_path).is_file()
    manager.start(small_config(tiny_dataset, tmp_path, epochs=1))  # free again once it stopped
    assert run_to_end(manager)[-1].status == "completed"


def test_dataset_error_in_thread_becomes_a_failed_job(tmp_path):
    for split in ("train", "val"):
        write_image(tmp_path / "one" / split / "ants" / "a.png", COLOURS["ants"])
    manager = JobManager()
    manager.start(small_config(tmp_path / "one", tmp_path))
    final = run_to_end(manager)[-1]
    assert final.status == "failed" and "at least 2" in final.error
    assert final.checkpoint_path is None


def test_prepare_runs_first_in_the_thread_and_its_error_is_reported(tmp_path):
    def offline():
        raise DatasetError("could not be downloaded (offline)")

    manager = JobManager()
    assert manager.start(small_config(tmp_path / "missing", tmp_path), prepare=offline).status == "preparing"
    final = run_to_end(manager)[-1]
    assert final.status == "failed" and final.error == "could not be downloaded (offline)"


def test_unexpected_exception_is_captured_and_manager_keeps_working(tiny_dataset, tmp_path, monkeypatch):
    class Broken:
        def __init__(self, *args, **kwargs):
            pass

        def __iter__(self):
            raise RuntimeError("boom")

    monkeypatch.setattr(jobs_mod, "TrainingRun", Broken)
    manager = JobManager()
    manager.start(small_config(tiny_dataset, tmp_path))
    final = run_to_end(manager)[-1]
    assert final.status == "failed" and final.error == "unexpected error: RuntimeError: boom"
    monkeypatch.undo()
    manager.start(small_config(tiny_dataset, tmp_path, epochs=1))
    assert run_to_end(manager)[-1].status == "completed"


def test_eta_comes_from_the_last_epoch_time(tmp_path):
    def record(epoch, seconds):
        return EpochRecord(epoch, 10, 0.5, 0.5, 0.5, 0.5, 0.001, seconds, 0.5, 1)

    job = Job(id=1, config=small_config(tmp_path, tmp_path, epochs=10), device="cpu", started=100.0, status="running")
    assert job.eta() is None  # nothing to go on before the first epoch
    job.history = [record(1, 30.0), record(2, 2.0)]  # fixed mode: features cached after the first views
    assert job.eta() == 2.0 * 8
    assert job.elapsed(now=160.0) == 60.0
    job.status, job.finished = "completed", 150.0
    assert job.eta() is None and job.elapsed(now=999.0) == 50.0
