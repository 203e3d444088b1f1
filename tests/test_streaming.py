"""Datasets larger than the memory budget: the decision at load time, and the streaming path
(images read from disk in DataLoader workers every pass) giving what the decode-once path gives."""
import multiprocessing

import pytest
import torch

from bees_ants.cli import main
from bees_ants.data import eval_batches, load_dataset, train_batches
from bees_ants.jobs import JobManager
from bees_ants.models import preprocessing_for
from bees_ants.predict import Predictor
from bees_ants.train import TrainingRun
from bees_ants.views.training import dataset_markdown
from conftest import COLOURS, FINETUNE_IMAGE_SIZE, small_config, write_image

PREP = preprocessing_for("resnet18")  # resize 256: a 64x48 image decodes to 256x341x3 bytes
TINY_MB = 1  # far below the 24 tiny images' ~6 MB decoded


def is_streamed(ds) -> bool:
    return all(split.images is None for split in ds.splits.values())


def streamed(root, **kw):
    ds = load_dataset(root, PREP, memory_budget_mb=TINY_MB, **kw)
    assert is_streamed(ds)
    return ds


def test_both_paths_give_the_same_classes_labels_paths_and_pixels(tiny_dataset):
    kept, stream = load_dataset(tiny_dataset, PREP, memory_budget_mb=10_000), streamed(tiny_dataset)
    assert not is_streamed(kept) and kept.storage.startswith("decoded once in memory: 5.99 MB (budget")
    assert stream.storage == "streaming from disk: 5.99 MB decoded would exceed the 1 MB budget"
    assert stream.storage in stream.summary()
    assert stream.classes == kept.classes and stream.counts() == kept.counts() and stream.skipped == []
    for name in ("train", "val"):
        a, b = kept.splits[name], stream.splits[name]
        assert a.paths == b.paths and torch.equal(a.labels, b.labels) and b.images is None
        # eval crops are pixel for pixel the same, batch by batch, in order
        pairs = list(zip(eval_batches(a, PREP.crop_size, 5), eval_batches(b, PREP.crop_size, 5), strict=True))
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in pairs)


def test_streamed_augmentation_follows_the_seed(tiny_dataset):
    split = streamed(tiny_dataset).splits["train"]

    def epoch(seed):
        torch.manual_seed(seed)
        return [(x, y) for x, y in train_batches(split, PREP, 4)]

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert [x.shape for x, _ in a] == [(4, 3, PREP.crop_size, PREP.crop_size)] * 4 and a[0][0].dtype == torch.uint8
    assert sorted(torch.cat([y for _, y in a]).tolist()) == sorted(split.labels.tolist())  # each image once
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_the_budget_decides(tmp_path, monkeypatch):
    # Square images: decoded at 256x256x3, 24 of them are 4.5 MB; the first estimate from the
    # file count alone (a 1.4 aspect allowance) says 6.3 MB.
    root = tmp_path / "square"
    for split, n in (("train", 8), ("val", 4)):
        for cls in ("ants", "bees"):
            for i in range(n):
                write_image(root / split / cls / f"{i}.png", COLOURS[cls], size=(48, 48), seed=i)
    assert not is_streamed(load_dataset(root, PREP, memory_budget_mb=7))  # fits at first sight
    calls = []
    fits = load_dataset(root, PREP, memory_budget_mb=5, on_progress=lambda *a: calls.append(a[0]))
    assert not is_streamed(fits) and calls == ["checking images"] * 24 + ["decoding images"] * 24  # the headers say it fits
    assert streamed(root).storage == "streaming from disk: 4.5 MB decoded would exceed the 1 MB budget"
    monkeypatch.setenv("BEES_ANTS_MEMORY_BUDGET_MB", "4")  # the setting, when no budget is passed
    assert is_streamed(load_dataset(root, PREP))


def test_unreadable_files_are_skipped_with_their_reason(tiny_dataset):
    ants = tiny_dataset / "train" / "ants"
    (ants / "fake.jpg").write_text("this is text, not a jpeg")           # found by the header check
    good = (ants / "ants_0.png").read_bytes()
    (ants / "truncated.png").write_bytes(good[: len(good) // 2])        # header fine, pixels missing
    ds = streamed(tiny_dataset)
    assert [(s.path.rsplit("/", 1)[-1], s.reason) for s in ds.skipped] == [
        ("fake.jpg", "not an image file (or a format Pillow cannot read)")]
    split = ds.splits["train"]
    assert len(split) == 17 and str(ants / "truncated.png") in split.paths
    seen = torch.cat([y for _, y in train_batches(split, PREP, 4)])
    assert len(seen) == 16  # the truncated file was left out of its batch, not a crash
    assert ds.skipped[-1].path == str(ants / "truncated.png") and ds.skipped[-1].reason == "truncated image file"
    assert str(ants / "truncated.png") not in split.paths and len(split) == len(split.labels) == 16
    assert ds.counts()["train"] == {"ants": 8, "bees": 8} and "skipped 2 file(s)" in ds.summary()


# Sizes at which the images decode to more than TINY_MB (at 128: 146x195 each, twice the budget)
# and the mode learns in 3 epochs from random weights (fixed does not at 128).
@pytest.mark.parametrize("mode, image_size", [("fixed", None), ("finetune", FINETUNE_IMAGE_SIZE)])
def test_a_model_learns_on_the_streaming_path(tiny_dataset, tmp_path, mode, image_size):
    # fixed: one streamed pass per split feeds the feature cache; finetune: every epoch streams
    config = small_config(tiny_dataset, tmp_path, mode=mode, memory_budget_mb=TINY_MB, image_size=image_size,
                          **({"lr": 0.01} if mode == "finetune" else {}))
    run = TrainingRun(config)
    records = list(run)
    assert is_streamed(run.dataset) and run.status == "completed"
    assert max(r.val_acc for r in records) >= 0.875  # chance is 0.5


def test_evaluation_is_the_same_on_both_paths(trained_checkpoint, tiny_dataset, monkeypatch):
    predictor = Predictor(trained_checkpoint, device="cpu")
    kept = predictor.evaluate(tiny_dataset)
    monkeypatch.setenv("BEES_ANTS_MEMORY_BUDGET_MB", str(TINY_MB))
    stream = predictor.evaluate(tiny_dataset)
    assert (stream.paths, stream.predicted, stream.confusion) == (kept.paths, kept.predicted, kept.confusion)
    assert stream.accuracy == kept.accuracy


def _labels_in_a_daemon(root, out):
    split = load_dataset(root, PREP, memory_budget_mb=TINY_MB).splits["val"]
    out.put(torch.cat([y for _, y in eval_batches(split, PREP.crop_size, 3)]).tolist())


def test_a_daemonic_process_streams_without_workers(tiny_dataset):
    # ZeroGPU trains in a daemonic process, which may not start DataLoader workers. (Spawned, not
    # forked as there: a fork of this process, whose torch threads have run, would hang in them.)
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    process = spawn.Process(target=_labels_in_a_daemon, args=(tiny_dataset, out), daemon=True)
    process.start()
    labels = out.get(timeout=120)
    process.join(timeout=60)
    assert labels == [0] * 4 + [1] * 4 and process.exitcode == 0


def test_cli_budget_option_streams(tiny_dataset, tmp_path, capsys):
    assert main(["train", "--data-dir", str(tiny_dataset), "--mode", "fixed", "--epochs", "1", "--batch-size", "4",
                 "--backbone-weights", "none", "--out-dir", str(tmp_path / "w"), "--memory-budget-mb", "1"]) == 0
    assert "streaming from disk: 5.99 MB decoded would exceed the 1 MB budget" in capsys.readouterr().out


def test_a_job_says_how_its_images_are_held(tiny_dataset, tmp_path):
    manager = JobManager(state_dir=tmp_path / "jobs")
    manager.submit("alice-key", small_config(tiny_dataset, tmp_path, epochs=1, memory_budget_mb=TINY_MB, image_size=None))
    final = list(manager.follow("alice-key"))[-1]
    assert final.status == "completed"
    assert final.storage == "streaming from disk: 5.99 MB decoded would exceed the 1 MB budget"
    assert final.storage in dataset_markdown(final)



def test_streamed_batches_for_a_cpu_model_are_not_pinned_where_cuda_only_seems_available(tiny_dataset, monkeypatch):
    # A ZeroGPU app process: torch says CUDA is available, and pinning memory (a CUDA init) raises.
    def cuda_init():
        raise RuntimeError("Low-level CUDA init (`torch._C._cuda_init`) reached")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch._C, "_cuda_init", cuda_init)
    split = streamed(tiny_dataset).splits["val"]
    labels = torch.cat([y for _, y in eval_batches(split, PREP.crop_size, 3, device="cpu")])
    assert labels.tolist() == [0] * 4 + [1] * 4
    assert len(list(train_batches(split, PREP, 4, device="cpu"))) == 2
