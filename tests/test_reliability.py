"""Reliability under load and faults: listings that stay cheap, saves cut short, concurrent
requests for the same images, memory given back after a run, a status call that answers at once."""
import gc
import os
import shutil
import threading
import time
import traceback
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from app_fixtures import api_client, app_settings, running_app
from bees_ants import catalog, checkpoint, runner
from bees_ants.checkpoint import remove_stale_temp_files, save_checkpoint, side_file
from bees_ants.images import PixelBudget
from bees_ants.visitors import identify
from conftest import COLOURS, make_dataset, small_config, write_image

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")

PREPROCESSING = {"resize_size": 32, "crop_size": 28, "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}


def fake_meta(i: int) -> dict:
    return {"arch": "resnet18", "class_names": ["ants", "bees"], "mode": "fixed", "preprocessing": PREPROCESSING,
            "best": {"val_acc": i / 1000, "epoch": 1}, "created": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}"}


# -- listing ---------------------------------------------------------------------------------------

def test_listing_200_checkpoints_reads_their_side_files(tmp_path, monkeypatch):
    settings = app_settings(tmp_path)
    for i in range(200):
        save_checkpoint(settings.weights_dir / f"m{i:03d}.pt", {"w": torch.zeros(2)}, fake_meta(i))
    assert side_file(settings.weights_dir / "m000.pt").is_file()
    expected = {str(settings.weights_dir / f"m{i:03d}.pt"): catalog.checkpoint_label(
        checkpoint.Listed("", fake_meta(i), 0)) for i in range(200)}

    def no_loading(path):
        raise AssertionError(f"{path} was loaded to list it")
    checkpoint._listed.clear()
    monkeypatch.setattr(checkpoint, "load_checkpoint", no_loading)
    choices = catalog.checkpoint_choices(settings, identify(None, None, "session"))
    assert len(choices) == 200 and {path: label for label, path in choices} == expected
    assert f"val {199 / 1000:.1%}" in expected[str(settings.weights_dir / "m199.pt")]


def test_listing_falls_back_to_the_checkpoint_without_a_matching_side_file(tmp_path):
    folder = tmp_path / "weights"
    old = save_checkpoint(folder / "old.pt", {"w": torch.zeros(2)}, fake_meta(1))
    side_file(old).unlink()  # a checkpoint from before side files
    rewritten = save_checkpoint(folder / "rewritten.pt", {"w": torch.zeros(2)}, fake_meta(2))
    torch.save({"format": checkpoint.FORMAT, "state_dict": {"w": torch.ones(3)}, "meta": fake_meta(3)},
               rewritten)  # the .pt replaced, its side file left behind: it describes the old one
    (folder / "junk.pt").write_bytes(b"not a checkpoint")
    listed = {Path(c.path).name: c.meta["best"]["val_acc"] for c in checkpoint.list_checkpoint_meta(folder)}
    assert listed == {"old.pt": 0.001, "rewritten.pt": 0.003}
    assert [Path(c.path).name for c in checkpoint.list_checkpoint_meta(folder)] == sorted(listed, key=lambda n: -os.path.getmtime(folder / n))


# -- temporary files of interrupted saves ----------------------------------------------------------

def test_stale_temp_files_are_removed_and_nothing_else(tmp_path):
    weights = tmp_path / "weights"
    old, fresh = time.time() - 3600, time.time()
    files = {
        weights / ".model.pt.k2j3h4.tmp": old,  # a checkpoint save cut short
        weights / "visitors" / "abc" / ".m.pt.x9y8.tmp": old,  # a visitor's
        weights / ".m.pt.json.q1w2.tmp": old,  # a side file's
        weights / ".model.pt2.tmp": old,  # an export's
        weights / ".running.pt.a1b2.tmp": fresh,  # a save going on right now (CLI, another process)
        weights / "model.pt": old, weights / "notes.tmp": old, weights / ".hidden": old,
    }
    for path, mtime in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
    removed = remove_stale_temp_files(weights)
    assert sorted(p.name for p in removed) == [".m.pt.json.q1w2.tmp", ".m.pt.x9y8.tmp", ".model.pt.k2j3h4.tmp",
                                               ".model.pt2.tmp"]
    assert sorted(p.name for p in weights.rglob("*") if p.is_file()) == [".hidden", ".running.pt.a1b2.tmp",
                                                                          "model.pt", "notes.tmp"]
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_the_app_removes_stale_temp_files_when_it_starts(tmp_path):
    from bees_ants.ui import build_app
    settings = app_settings(tmp_path)
    stale = settings.weights_dir / ".model.pt.k2j3h4.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a model")
    os.utime(stale, (time.time() - 3600,) * 2)
    build_app(settings)
    assert not stale.exists()


# -- galleries under concurrent requests -----------------------------------------------------------

def test_gallery_files_are_written_once_under_names_of_their_own():
    from gradio.utils import get_upload_folder
    from bees_ants.ui.common import gallery_files
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    first, second = gallery_files([(image, "a"), (image, "b")])
    assert first[0] != second[0] and [first[1], second[1]] == ["a", "b"]
    for path, _ in (first, second):  # complete files in Gradio's cache, which it serves as they are
        assert Path(path).is_relative_to(get_upload_folder()) and Image.open(path).size == (40, 30)


@pytest.fixture(scope="module")
def shared_model_server(tmp_path_factory, trained_checkpoint):
    root = tmp_path_factory.mktemp("reliability")
    settings = app_settings(root)
    settings.weights_dir.mkdir(parents=True)
    model = shutil.copy(trained_checkpoint, settings.weights_dir / "shared.pt")  # top level: every visitor's
    with running_app(settings) as url:
        yield url, settings, str(model)


def test_concurrent_predictions_of_the_same_images_all_succeed(shared_model_server, tmp_path):
    url, _, model = shared_model_server
    images = [write_image(tmp_path / f"{i}.png", COLOURS["ants" if i % 2 else "bees"], seed=i) for i in range(3)]
    clients = [api_client(url) for _ in range(16)]

    def calls(client: Client) -> list:
        outcomes = []
        for _ in range(5):
            try:
                gallery, _, problems, table = client.predict(model, [handle_file(str(p)) for p in images],
                                                             api_name="/predict")
                assert len(gallery) == 3 and all(Image.open(item["image"]).size[0] > 0 for item in gallery)
                outcomes.append(None)
            except Exception as e:  # every failure counted, whatever it is
                outcomes.append(repr(e))
        return outcomes

    with ThreadPoolExecutor(len(clients)) as pool:
        outcomes = [o for per_client in pool.map(calls, clients) for o in per_client]
    assert len(outcomes) == 80 and [o for o in outcomes if o] == []


# -- /status ---------------------------------------------------------------------------------------

def test_status_answers_at_once_with_the_callers_job(shared_model_server):
    url, settings, _ = shared_model_server
    client = api_client(url)
    idle = client.predict(api_name="/status")
    assert "No training yet" in idle[0]
    run = client.submit(dataset=str(settings.dataset_dirs[0]), arch="resnet18", mode="fixed", backbone="none",
                        epochs=300, lr=0.02, momentum=0.9, batch_size=4, step_size=7, gamma=0.1, frozen_epochs=5,
                        api_name="/train")
    try:
        next(iter(run))  # the first output: the job exists
        status = client.predict(api_name="/status")[0]
        assert "resnet18" in status and "300 epochs" in status and "No training yet" not in status
        other = api_client(url).predict(api_name="/status")[0]
        assert "No training yet" in other  # a different caller: their own (no) job
    finally:
        client.predict(api_name="/cancel")
        for _ in run:  # to its end
            pass
    assert client.predict(api_name="/status")[0].startswith("## ■ Cancelled")


# -- memory ----------------------------------------------------------------------------------------

def test_a_finished_run_keeps_nothing_alive(tmp_path, monkeypatch):
    refs = []

    class Tracked(runner.TrainingRun):
        def _setup(self):
            super()._setup()
            refs.extend([weakref.ref(self), weakref.ref(self.dataset), weakref.ref(self.model)])
    monkeypatch.setattr(runner, "TrainingRun", Tracked)
    config = small_config(make_dataset(tmp_path / "data"), tmp_path, epochs=2)
    events = list(runner.training_events(config, str(tmp_path / "cancel")))
    assert events[-1] == ("end", "completed") and len(refs) == 3
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_pixel_budget_holds_back_images_beyond_it():
    budget = PixelBudget(100)
    got = threading.Event()

    def second():
        with budget.hold(60):
            got.set()
    with budget.hold(60):
        waiting = threading.Thread(target=second)
        waiting.start()
        waiting.join(0.3)  # it cannot go ahead while 60 of 100 pixels are held
        assert not got.is_set() and budget.in_flight == 60
    waiting.join()
    assert got.is_set() and budget.in_flight == 0
    with budget.hold(1000):  # alone, an image larger than the budget still goes ahead
        assert budget.in_flight == 1000


def test_a_run_that_failed_with_a_bug_keeps_nothing_alive_through_its_traceback(tmp_path, monkeypatch):
    refs = []

    class Buggy(runner.TrainingRun):
        def _setup(self):
            super()._setup()
            refs.extend([weakref.ref(self), weakref.ref(self.dataset), weakref.ref(self.model)])

        def _train_epoch(self, epoch):
            raise RuntimeError("a bug")
    monkeypatch.setattr(runner, "TrainingRun", Buggy)
    config = small_config(make_dataset(tmp_path / "data"), tmp_path, epochs=2)
    with pytest.raises(RuntimeError, match="a bug") as raised:
        list(runner.training_events(config, str(tmp_path / "cancel")))
    gc.collect()
    assert "_train_epoch" in [f.name for f in traceback.extract_tb(raised.value.__traceback__)]  # it still says where
    assert len(refs) == 3 and [r() for r in refs] == [None, None, None]  # its frames' tensors do not
