"""The one training loop: `TrainingRun` is iterated for one `EpochRecord` per epoch.

The CLI prints the records, the app's job thread stores them, the benchmark times them. Modes:
- `finetune`: every parameter trains (the tutorial's first half);
- `fixed`: the backbone is frozen *and in eval mode*; only the new head trains. Since the backbone
  never changes, its features are computed once per image view and reused: val features once,
  train features for `feature_views` augmented views, cycled through the epochs. With
  `feature_views == epochs` every epoch sees fresh augmentation, exactly like the tutorial.
- `progressive`: `fixed` for the first `frozen_epochs` epochs (the new head learns on cheap cached
  features), then everything unfreezes and fine-tunes, so the backbone never receives gradients
  from a random head.
What trains when is one named policy, `UnfreezeSchedule`, built from the mode; both kinds of epoch
fit their batches with the same `_fit_batch`.
The best-val-accuracy weights are written whenever they improve (after that epoch joins the
history, so the file always describes itself), so a cancel or crash leaves the best model so far
on disk; at the end the file is rewritten once with the full history and final status.

Under `torchrun` (WORLD_SIZE > 1) each process trains on its shard of the data with
DistributedDataParallel (gloo on CPU, NCCL on GPUs); epoch metrics are summed over processes and
only rank 0 writes the checkpoint, in the same format as a single-process run.
"""
from __future__ import annotations

import copy
import datetime as dt
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import torchvision
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import __version__
from .checkpoint import save_checkpoint
from .data import Dataset, Preprocessing, Split, eval_batches, load_dataset, train_batches
from .datahash import dataset_hash
from .device import (autocast, batch_slices, describe_device, inference_batch_size, pick_device,
                     rank_and_world)
from .models import build_model, freeze_backbone, get_head, headless, preprocessing_for, unfreeze

from .config import TrainConfig


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    best_val_acc: float
    best_epoch: int


def shard(split: Split, rank: int, world: int, pad: bool) -> Split:
    """Every `world`-th sample from `rank`. With `pad`, shards are made equal in length by
    repeating samples (as DistributedSampler does): DDP needs the same number of steps per rank."""
    idx = list(range(rank, len(split), world))
    if pad:
        per_rank = math.ceil(len(split) / world)
        idx += list(range(per_rank - len(idx)))
    return split.subset(idx)


@dataclass(frozen=True)
class UnfreezeSchedule:
    """When, and how much of, the backbone trains: the one place the modes differ in what learns.

    While only the head trains, the backbone is a fixed function, so its features are computed once
    and cached. Partial unfreezing (the last k blocks) and per-layer learning rates belong here."""
    frozen_epochs: int  # the head alone trains in epochs 1..frozen_epochs, then everything does

    @classmethod
    def for_config(cls, cfg: TrainConfig) -> "UnfreezeSchedule":
        return cls({"finetune": 0, "fixed": cfg.epochs, "progressive": cfg.frozen_epochs}[cfg.mode])

    def head_only(self, epoch: int) -> bool:
        return epoch <= self.frozen_epochs

    def changes_at(self, epoch: int) -> bool:
        """Whether `apply` must run before `epoch` (the first, or when what trains changes)."""
        return epoch == 1 or self.head_only(epoch) != self.head_only(epoch - 1)

    def apply(self, model: nn.Module, epoch: int) -> None:
        """Set which parameters get gradients in `epoch`. Frozen parameters get none, so one SGD
        over every parameter leaves them alone until they are unfrozen."""
        if self.head_only(epoch):
            freeze_backbone(model)
        else:
            unfreeze(model)


@dataclass
class Best:
    """The best epoch so far by val accuracy, with its weights."""
    val_acc: float = 0.0
    val_loss: float = math.inf
    epoch: int = 0
    state_dict: dict | None = field(default=None, repr=False)


class Cancelled(Exception):
    pass


def new_checkpoint_path(cfg: TrainConfig) -> str:
    stem = Path(cfg.out_dir) / f"{cfg.arch}-{cfg.mode}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    path, n = stem.with_suffix(".pt"), 1
    while path.exists():  # two runs started within the same second
        n += 1
        path = Path(f"{stem}-{n}.pt")
    return str(path)


@dataclass
class TrainingRun:
    config: TrainConfig
    dataset: Dataset | None = None  # pass a loaded one to skip the scan (the app shows it first)
    cancel: threading.Event = field(default_factory=threading.Event)
    # on_progress(stage, done, total) during long steps within an epoch, at most once per batch:
    # "decoding images", "caching train features", "caching val features" (images), "training" (batches)
    on_progress: Callable[[str, int, int], None] | None = None
    # results, filled in while iterating
    history: list[EpochRecord] = field(default_factory=list)
    checkpoint_path: str | None = None
    status: str = "pending"  # pending, running, completed, cancelled
    best: Best = field(default_factory=Best, init=False)
    # state, all set in `_setup` when iteration starts
    rank: int = field(init=False, repr=False)
    world: int = field(init=False, repr=False)
    device: torch.device = field(init=False, repr=False)
    preprocessing: Preprocessing = field(init=False, repr=False)
    train_split: Split = field(init=False, repr=False)  # this process's shard under torchrun
    val_split: Split = field(init=False, repr=False)
    model: nn.Module = field(init=False, repr=False)
    schedule: UnfreezeSchedule = field(init=False, repr=False)
    optimizer: torch.optim.Optimizer = field(init=False, repr=False)
    scheduler: torch.optim.lr_scheduler.LRScheduler = field(init=False, repr=False)
    trained: nn.Module = field(init=False, repr=False)  # what fits batches: the model or its head, DDP-wrapped
    train_features: dict[int, torch.Tensor] = field(init=False, repr=False)  # head-only epochs: per view
    val_features: torch.Tensor | None = field(init=False, repr=False)

    def _setup(self) -> None:
        cfg = self.config
        self.rank, self.world = rank_and_world()
        torch.manual_seed(cfg.seed + self.rank)  # DDP copies rank 0's initial weights to the others
        self.preprocessing = preprocessing_for(cfg.arch)
        if self.dataset is None:
            self.dataset = load_dataset(cfg.data_dir, self.preprocessing, on_progress=self.on_progress,
                                        memory_budget_mb=cfg.memory_budget_mb)
        splits = self.dataset.splits
        self.train_split = shard(splits["train"], self.rank, self.world, pad=True) if self.world > 1 else splits["train"]
        self.val_split = shard(splits["val"], self.rank, self.world, pad=False) if self.world > 1 else splits["val"]
        self.device = pick_device(cfg.device)
        model = build_model(cfg.arch, len(self.dataset.classes), cfg.backbone_weights)
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.schedule = UnfreezeSchedule.for_config(cfg)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
        self.train_features, self.val_features = {}, None
        self.checkpoint_path = cfg.checkpoint_path or new_checkpoint_path(cfg)
        self.best = Best()
        self.status = "running"

    def __iter__(self) -> Iterator[EpochRecord]:
        self._setup()
        cfg = self.config
        try:
            for epoch in range(1, cfg.epochs + 1):
                start = time.perf_counter()
                if self.schedule.changes_at(epoch):
                    self.schedule.apply(self.model, epoch)
                    # After `apply`: the DDP wrap registers the parameters that train.
                    head_only = self.schedule.head_only(epoch)
                    self.trained = self._distributed(get_head(self.model) if head_only else self.model)
                lr = self.optimizer.param_groups[0]["lr"]
                train_loss, train_acc = self._train_epoch(epoch)
                val_loss, val_acc = self._validate(epoch)
                self.scheduler.step()
                improved = val_acc > self.best.val_acc or self.best.state_dict is None
                if improved:
                    self.best = Best(val_acc, val_loss, epoch, copy.deepcopy(self.model.state_dict()))
                record = EpochRecord(epoch, cfg.epochs, train_loss, train_acc, val_loss, val_acc, lr,
                                     time.perf_counter() - start, self.best.val_acc, self.best.epoch)
                self.history.append(record)  # before saving: the file's history includes its best epoch
                if improved:
                    self._save()
                yield record
            self.status = "completed"
        except Cancelled:
            self.status = "cancelled"
        finally:
            if self.best.state_dict is not None and self.status in ("completed", "cancelled"):
                self._save()  # once more, with the whole history and final status

    # -- one epoch ---------------------------------------------------------------------------------

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        """(mean loss, accuracy) over this epoch's augmented train set."""
        if self.schedule.head_only(epoch):
            self.model.eval()  # frozen BatchNorm statistics too: the backbone is a fixed function
            batches = self._feature_batches(epoch)
        else:
            self.trained.train()
            batches = self._image_batches()
        n = len(self.train_split)
        steps = len(batch_slices(n, self.config.batch_size))
        loss_sum, correct = 0.0, 0
        for step, (x, y) in enumerate(batches, 1):
            self._check_cancel()
            batch_loss, batch_correct = self._fit_batch(x, y)
            loss_sum += batch_loss
            correct += batch_correct
            self._progress("training", step, steps)
        return self._reduce(loss_sum, correct, n)

    def _fit_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One optimisation step on `self.trained`; returns (summed loss, correct predictions)."""
        with self._autocast():
            out = self.trained(x)
            loss = nn.functional.cross_entropy(out.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item() * len(y), (out.argmax(1) == y).sum().item()

    def _image_batches(self):
        for x, y in train_batches(self.train_split, self.preprocessing, self.config.batch_size):
            yield self._to_device(x), y.to(self.device)

    def _feature_batches(self, epoch: int):
        """Batches of cached backbone features: `feature_views` augmented views of the train set,
        cycled through the epochs, each computed the first time it is needed."""
        split, bs = self.train_split, self.config.batch_size
        view = (epoch - 1) % self.config.feature_views
        if view not in self.train_features:
            views = train_batches(split, self.preprocessing, inference_batch_size(self.device), shuffle=False)
            self.train_features[view] = self._features(views, "caching train features", len(split))
        if self.val_features is None:
            self.val_features = self._features(self._val_batches(), "caching val features", len(self.val_split))
        feats, labels = self.train_features[view], split.labels.to(self.device)
        order = torch.randperm(len(split), device=self.device)
        for s in batch_slices(len(split), bs):
            idx = order[s]
            yield feats[idx], labels[idx]

    def _features(self, batches, stage: str, total: int) -> torch.Tensor:
        out, done = [], 0
        with headless(self.model), torch.inference_mode(), self._autocast():
            for x, _ in batches:
                self._check_cancel()
                out.append(self.model(self._to_device(x)).float())
                done += len(x)
                self._progress(stage, done, total)
        return torch.cat(out)

    def _validate(self, epoch: int) -> tuple[float, float]:
        if self.schedule.head_only(epoch):
            return self._evaluate(get_head(self.model), [(self.val_features, self.val_split.labels)])
        self.model.eval()
        return self._evaluate(self.model, self._val_batches())

    def _evaluate(self, forward, batches) -> tuple[float, float]:
        loss_sum, correct, n = 0.0, 0, 0
        with torch.inference_mode(), self._autocast():
            for x, y in batches:
                self._check_cancel()
                if x.dtype == torch.uint8:
                    x = self._to_device(x)
                y = y.to(self.device)
                out = forward(x).float()
                loss_sum += nn.functional.cross_entropy(out, y, reduction="sum").item()
                correct += (out.argmax(1) == y).sum().item()
                n += len(y)
        return self._reduce(loss_sum, correct, n)

    # -- helpers -----------------------------------------------------------------------------------

    def _check_cancel(self):
        if self.cancel.is_set():
            raise Cancelled

    def _progress(self, stage: str, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(stage, done, total)

    def _autocast(self):
        return autocast(self.device)

    def _to_device(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        non_blocking = self.device.type == "cuda"
        if non_blocking:
            batch_uint8 = batch_uint8.pin_memory()
        return self.preprocessing.normalize(batch_uint8.to(self.device, non_blocking=non_blocking))

    def _val_batches(self):
        return eval_batches(self.val_split, self.preprocessing.crop_size, inference_batch_size(self.device))

    def _distributed(self, module: nn.Module) -> nn.Module:
        if self.world == 1:
            return module
        return DistributedDataParallel(module, device_ids=[self.device] if self.device.type == "cuda" else None)

    def _reduce(self, loss_sum: float, correct: int, n: int) -> tuple[float, float]:
        """(mean loss, accuracy) over every process's samples."""
        if self.world > 1:
            t = torch.tensor([loss_sum, correct, n], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            loss_sum, correct, n = t.tolist()
        return loss_sum / n, correct / n

    # -- checkpoint --------------------------------------------------------------------------------

    def _save(self) -> None:
        if self.rank != 0:
            return
        cfg, best = self.config, self.best
        meta = {
            "arch": cfg.arch,
            "class_names": list(self.dataset.classes),
            "mode": cfg.mode,
            "preprocessing": asdict(self.preprocessing),
            "hyperparameters": {k: v for k, v in asdict(cfg).items()
                                if k not in ("data_dir", "out_dir", "checkpoint_path", "device")},
            "history": [asdict(r) for r in self.history],
            "best": {"val_acc": best.val_acc, "val_loss": best.val_loss, "epoch": best.epoch},
            "status": self.status,
            "dataset": {"root": str(self.dataset.root), "counts": self.dataset.counts(),
                        "skipped": len(self.dataset.skipped),
                        "hash": dataset_hash(self.dataset.root, self.dataset.classes)},
            "device": describe_device(self.device) + (f" x {self.world} processes" if self.world > 1 else ""),
            "versions": {"bees_ants": __version__, "torch": str(torch.__version__),
                         "torchvision": str(torchvision.__version__)},
            "created": dt.datetime.now().isoformat(timespec="seconds"),
        }
        save_checkpoint(self.checkpoint_path, best.state_dict, meta)
