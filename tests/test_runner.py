"""One run as a stream of events (runner.py): its closing contract and its time limit."""
import threading

from bees_ants import runner
from bees_ants.checkpoint import load_checkpoint
from conftest import small_config


def tracked_runs(monkeypatch) -> list:
    """Every TrainingRun the runner starts, with the thread that trains it."""
    runs = []

    class Tracked(runner.TrainingRun):
        def _setup(self):
            super()._setup()
            self.thread = threading.current_thread()
            runs.append(self)
    monkeypatch.setattr(runner, "TrainingRun", Tracked)
    return runs


def test_a_consumer_that_stops_reading_cancels_the_run_and_its_thread_ends(tiny_dataset, tmp_path, monkeypatch):
    runs = tracked_runs(monkeypatch)
    events = runner.training_events(small_config(tiny_dataset, tmp_path, mode="finetune", epochs=500),
                                    str(tmp_path / "cancel"))
    for event in events:
        if event[0] == "epoch":
            break
    events.close()  # returns once the run has stopped
    run = runs[0]
    assert not run.thread.is_alive()
    assert run.status == "cancelled" and 1 <= len(run.history) < 500
    saved = load_checkpoint(run.checkpoint_path).meta
    assert saved["status"] == "cancelled" and len(saved["history"]) == len(run.history)  # best so far kept


def test_a_consumer_dropped_during_the_scan_stops_the_scan(tiny_dataset, tmp_path, monkeypatch):
    runs = tracked_runs(monkeypatch)
    scanned_in = []
    load_dataset = runner.load_dataset

    def recording_load_dataset(*args, **kwargs):
        scanned_in.append(threading.current_thread())
        return load_dataset(*args, **kwargs)
    monkeypatch.setattr(runner, "load_dataset", recording_load_dataset)
    events = runner.training_events(small_config(tiny_dataset, tmp_path), str(tmp_path / "cancel"))
    assert next(events)[0] == "progress"  # the scan is under way
    del events  # garbage: closed, as a consumer that went away without a word
    assert len(scanned_in) == 1 and not scanned_in[0].is_alive()
    assert runs == []  # no training started for nobody


def test_a_time_limit_stops_the_run_as_a_cancel_and_says_so(tiny_dataset, tmp_path):
    events = list(runner.training_events(small_config(tiny_dataset, tmp_path, mode="finetune", epochs=500),
                                         str(tmp_path / "cancel"), time_limit=0.001))
    assert events[-2:] == [("time_limit", 0.001), ("end", "cancelled")]
    assert not [e for e in events if e[0] == "epoch"]


def test_a_cancel_is_not_reported_as_the_time_limit(tiny_dataset, tmp_path):
    cancel = runner.CancelFlag(tmp_path / "cancel")
    events = runner.training_events(small_config(tiny_dataset, tmp_path, mode="finetune", epochs=500),
                                    cancel.path, time_limit=3600)
    seen = []
    for event in events:
        seen.append(event)
        if event[0] == "epoch":
            cancel.set()
    assert seen[-1] == ("end", "cancelled") and "time_limit" not in [e[0] for e in seen]
