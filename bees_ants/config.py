"""Training settings, and the one place that decides what a run trains with: plain data, no torch.

A run's settings come in layers, and `recipe` alone stacks them (the CLI and the app call it):
what the user gave (CLI options, the app's form) wins over a preset (`--preset tutorial`), which
wins over the mode's defaults (MODE_DEFAULTS: the measured fine-tune recipe), which win over the
installation's (where checkpoints go, a local backbone weights file: Settings, the catalog), which
win over TrainConfig's field defaults. With no mode given, `default_mode` picks one from the device.
Kept torch-free so the CLI can build its parser (choices and defaults included) without the
seconds a torch import costs.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .settings import DEFAULT_WEIGHTS_DIR, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from .stats import STOP_METRICS

ARCHS = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0")
DEFAULT_ARCH = "resnet18"
MODES = ("finetune", "fixed", "progressive")
MODE_LABELS = {"finetune": "fine-tune the whole network", "fixed": "fixed feature extractor",
               "progressive": "fixed, then fine-tune (progressive)"}
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("step", "cosine")


class ConfigError(UserError):
    """A training setting out of range; the message names it."""


def mode_text(mode: str, frozen_epochs: int) -> str:
    """A mode as people read it: in the app, the comparison table and the Hub model card."""
    if mode == "progressive":
        return f"fixed for {frozen_epochs} epochs, then fine-tune"
    return MODE_LABELS.get(mode, mode)


@dataclass
class TrainConfig:
    data_dir: str
    arch: str = DEFAULT_ARCH
    mode: str = "finetune"
    epochs: int = 25
    lr: float = 0.001  # the head's; the backbone's is lr * backbone_lr_scale
    momentum: float = 0.9  # SGD only
    optimizer: str = "sgd"  # sgd (the tutorial's) or adamw (decoupled weight decay 0.01)
    backbone_lr_scale: float = 1.0
    label_smoothing: float = 0.0
    lr_schedule: str = "step"  # step: x gamma every step_size epochs; cosine: to 0 over the epochs
    # Not the tutorial's 4: at batch 4 BatchNorm statistics are so noisy that fine-tuning peaks in
    # the first epoch and drifts down (measured: 0.908 -> ~0.83). Measured on ants/bees with
    # MobileNetV2: fine-tune best 0.941 at batch 16, 0.954 at 32; fixed 0.967 either way, and at
    # 32 it stays there instead of peaking in epoch 1.
    batch_size: int = 32
    step_size: int = 7
    gamma: float = 0.1
    backbone_weights: str | None = "imagenet"  # "imagenet", a state-dict path, or None (random)
    feature_views: int = 1  # fixed mode: augmented views of the train set whose features are cached
    frozen_epochs: int = 5  # progressive mode: epochs of head-only training before unfreezing
    # finetune/progressive: train only the last `train_blocks` blocks (models.blocks) and the head;
    # the frozen blocks before them run once per cached view (0: every block trains)
    train_blocks: int = 0
    patience: int = 0  # stop after this many epochs without a better `stop_metric` (0: never stop early)
    stop_metric: str = "val_acc"  # what patience and the best checkpoint watch (stats.STOP_METRICS)
    # BatchNorm layers that train keep their ImageNet statistics (eval mode; their scale and shift
    # still learn): on small sets a batch's statistics are noisy and drag the pretrained ones away.
    freeze_bn: bool = False
    # The side of the square crop the model sees; images are first resized in the architecture's
    # own proportion (256 for a 224 crop). None: the architecture's own (224 for every ARCH). The
    # cost of a batch goes with its pixels: on ants/bees 160 trained in half of 224's time and 112
    # in a fifth, at some accuracy with ImageNet weights (bench/results/RESULTS.md, "Input size").
    image_size: int | None = None
    seed: int = 0
    # RAM a run may fill with decoded images and cached activations; None: data.memory_budget_bytes
    # (BEES_ANTS_MEMORY_BUDGET_MB, else half of the memory available when the run starts).
    memory_budget_mb: int | None = None
    device: str | None = None  # None: cuda, then mps, then cpu
    out_dir: str = str(DEFAULT_WEIGHTS_DIR)
    checkpoint_path: str | None = None  # default: out_dir/<arch>-<mode>-<time>.pt
    resume_from: str | None = None  # continue the interrupted run of this checkpoint (train.resume_config)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, not '{self.mode}'")
        for name, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("stop_metric", STOP_METRICS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, not '{getattr(self, name)}'")
        for name in ("epochs", "batch_size", "step_size", "feature_views", "frozen_epochs"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("train_blocks", "patience"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be 0 or more")
        if self.image_size is not None and not MIN_IMAGE_SIZE <= int(self.image_size) <= MAX_IMAGE_SIZE:
            raise ConfigError(f"image_size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels (or unset: the "
                              f"architecture's own), not {self.image_size}")
        if not (self.lr > 0 and 0 <= self.momentum < 1 and 0 < self.gamma <= 1):
            raise ConfigError("need lr > 0, 0 <= momentum < 1 and 0 < gamma <= 1")
        if not (0 < self.backbone_lr_scale <= 1 and 0 <= self.label_smoothing < 1):
            raise ConfigError("need 0 < backbone_lr_scale <= 1 and 0 <= label_smoothing < 1")


# What a mode trains with unless the setting is given (a CLI option, the app's form, a preset),
# measured on ants/bees with the MobileNetV2 stand-in weights, seeds 0, 1, 2 (bench/results/RESULTS.md,
# "Defaults a user can trust"). Fine-tune: the new head at 0.003, the pretrained layers at a tenth of
# it, their BatchNorm statistics kept (on small sets a batch's are noisy), a cosine schedule over 10
# epochs and no early stopping: best 0.954/0.961/0.954 and the last epoch within 0.013 of it. The
# recipe before (head 0.01, StepLR, BatchNorm training, patience 3) peaked in epoch 1 or
# 2 and ended 0.026-0.039 below its best; with the cosine schedule, patience cut runs short before
# the schedule settled them (seed 1 stopped after epoch 6 at 0.928; run to the end it reached 0.961
# in epoch 7 and ended at 0.948), so patience is an option, not the default. The fixed extractor
# keeps 0.001 and the step schedule (0.967, seed 0; at 0.01 its best is 0.954/0.961/0.954).
MODE_DEFAULTS = {"finetune": {"epochs": 10, "lr": 0.003, "backbone_lr_scale": 0.1, "freeze_bn": True,
                              "lr_schedule": "cosine", "patience": 0}}


# The tutorial's exact recipe; `fixed` then recomputes train features every epoch, as it does.
PRESETS = {"tutorial": dict(epochs=25, lr=0.001, momentum=0.9, batch_size=4, step_size=7, gamma=0.1,
                            feature_views=25, optimizer="sgd", backbone_lr_scale=1.0, label_smoothing=0.0, freeze_bn=False,
                            lr_schedule="step", train_blocks=0, patience=0)}


def arch_of_file(path: Path) -> str | None:
    """The architecture a weights file's name starts with (torchvision: "<arch>-<hash>.pth");
    the longest match tells mobilenet_v2 from mobilenet_v3_large."""
    return max((a for a in ARCHS if path.name.startswith(a)), key=len, default=None)


def default_mode(on_cpu: bool) -> str:
    """The mode when none is given. On a CPU fine-tuning costs ~10-30 s an epoch on the tutorial's
    set (README, Speed) while the fixed extractor caches its features once and then takes about a
    second: default to what works there; with a GPU, fine-tune every layer."""
    return "fixed" if on_cpu else TrainConfig.mode


def recipe(given: Mapping[str, Any], preset: str | None = None, on_cpu: bool = False,
           defaults: Mapping[str, Any] = {}) -> TrainConfig:
    """The TrainConfig for what a user asked. `given`: the settings they set, by TrainConfig field
    name (an option not given is left out, not None: None is a value, e.g. random init);
    `preset`: a PRESETS name; `defaults`: the installation's (where checkpoints go, local weights
    and the backbone they are for). What wins: given > the preset > the mode's defaults
    (MODE_DEFAULTS) > `defaults` > TrainConfig's field defaults. The mode is given, else
    `default_mode(on_cpu)`. Out-of-range settings raise ConfigError, naming the setting."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"preset must be one of {tuple(PRESETS)}, not '{preset}'")
    mode = given.get("mode", default_mode(on_cpu))
    return TrainConfig(**{**defaults, **MODE_DEFAULTS.get(mode, {}), **PRESETS.get(preset, {}), **given, "mode": mode})
