"""Shared fixtures and helpers: small synthetic image folders whose classes a random-init model can
separate, a small training config for them, a free local port."""
from __future__ import annotations

import os
import socket
import zipfile
from pathlib import Path

# Under pytest-xdist (pyproject's `-n 2`) each worker shares the cores with the other: one torch
# thread each, so two workers do not oversubscribe two cores; set before torch is imported so the
# processes the tests start inherit it too.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
from PIL import Image

from bees_ants.train import TrainConfig

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# Class -> mean colour. Colour survives any random convolution stack, so even an untrained
# backbone's features separate these classes and a few epochs lift accuracy far above chance.
COLOURS = {"ants": (200, 60, 40), "bees": (40, 70, 210), "wasps": (60, 190, 60)}
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# The input size the tests' runs train at (TrainConfig.image_size): their images are 64x48, and a
# 64-pixel crop costs a twelfth of the default 224's. Fine-tuning every layer from random weights
# at batch 4 needs more to learn the colours in 3 epochs (measured, resnet18 on the tiny set: val
# accuracy stays 0.5 at 64 and 96; at 128 it learns as at 224, in 4.4 s instead of 10.4 s). Tests
# of the default size, of real photos or of pretrained weights leave it unset.
IMAGE_SIZE = 64
FINETUNE_IMAGE_SIZE = 128


# The modules that take longest, longest first (as measured with --durations): the workers take
# modules in collection order (pyproject: --no-loadscope-reorder), so the long ones start early and
# the two workers end together instead of one running a long module alone at the end.
LONGEST_FIRST = ("test_e2e_browser.py", "test_export.py", "test_e2e_builder.py", "test_e2e_layout.py",
                 "test_training.py", "test_training_options.py", "test_streaming.py", "test_distributed.py",
                 "test_hub.py", "test_zerogpu.py", "test_e2e_web.py", "test_app.py", "test_soak.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def write_image(path: Path, colour, size=(64, 48), seed=0, mode="RGB") -> Path:
    rng = np.random.default_rng(seed)
    pixels = (rng.normal(0, 35, (size[1], size[0], 3)) + colour).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pixels)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def make_dataset(root: Path, classes=("ants", "bees"), n_train=8, n_val=4, ext=".png") -> Path:
    seed = 0
    for split, n in (("train", n_train), ("val", n_val)):
        for cls in classes:
            for i in range(n):
                seed += 1
                write_image(root / split / cls / f"{cls}_{i}{ext}", COLOURS[cls], seed=seed)
    return root


def write_zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def small_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """A run that takes seconds on a CPU: fixed resnet18 from random weights at IMAGE_SIZE,
    checkpoints in out/weights."""
    base = dict(data_dir=str(data), arch="resnet18", mode="fixed", epochs=3, lr=0.02, batch_size=4,
                backbone_weights=None, image_size=IMAGE_SIZE, out_dir=str(out / "weights"))
    return TrainConfig(**{**base, **overrides})


def finetune_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """`small_config` fine-tuning every layer, at FINETUNE_IMAGE_SIZE, where it learns in 3 epochs."""
    return small_config(data, out, **{"mode": "finetune", "lr": 0.01, "image_size": FINETUNE_IMAGE_SIZE, **overrides})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """train/{ants,bees} x 8 and val/{ants,bees} x 4 coloured-noise PNGs."""
    return make_dataset(tmp_path / "tiny")


@pytest.fixture
def small_dataset(tmp_path) -> Path:
    """train/{ants,bees} x 4 and val/{ants,bees} x 2, still two batches of 4 an epoch: for tests of
    what a run does (determinism, cancel, what it saves), not of how well it learns."""
    return make_dataset(tmp_path / "small", n_train=4, n_val=2)


def _train_once(tmp_path_factory, **overrides) -> Path:
    from bees_ants.train import TrainingRun

    root = tmp_path_factory.mktemp("ckpt")
    run = TrainingRun(small_config(make_dataset(root / "data"), root, epochs=6, **overrides))
    list(run)
    return Path(run.checkpoint_path)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint trained once per session on a tiny dataset (fixed mode, random resnet18, IMAGE_SIZE)."""
    return _train_once(tmp_path_factory)


@pytest.fixture(scope="session")
def full_size_checkpoint(tmp_path_factory) -> Path:
    """The same at the default input size (224): Grad-CAM's maps need its 7x7 features."""
    return _train_once(tmp_path_factory, image_size=None)


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    """The app on a free local port, one per test module: (url, settings). The settings offer the
    tiny two-class set and a one-class set that cannot train (app_fixtures.app_settings)."""
    from app_fixtures import app_settings, running_app

    settings = app_settings(tmp_path_factory.mktemp("app"))
    with running_app(settings) as url:
        yield url, settings
