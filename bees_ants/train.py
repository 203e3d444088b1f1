"""The one training loop: `TrainingRun` is iterated for one `EpochRecord` per epoch.

The CLI prints the records, the app's job thread stores them, the benchmark times them. Modes:
- `finetune`: every parameter trains (the tutorial's first half), or with `train_blocks` k only
  the last k blocks (models.blocks) and the head;
- `fixed`: the backbone is frozen *and in eval mode*; only the new head trains;
- `progressive`: `fixed` for the first `frozen_epochs` epochs (the new head learns on cheap cached
  features), then fine-tunes as `finetune` does, so the backbone never receives gradients from a
  random head.
What trains when is one named policy, `UnfreezeSchedule`: an epoch trains everything after a cut.
Whatever lies before the cut is frozen and in eval mode, hence a fixed function of its input, so
its output is computed once per image view and reused: val once, train for `feature_views`
augmented views cycled through the epochs (`feature_views == epochs` gives fresh augmentation every
epoch, like the tutorial), as many as the memory budget holds (`CachePlan`; none: the frozen part
runs on every batch). Every kind of epoch fits its batches with the same `_fit_batch`.
The optimizer is SGD or AdamW, the new head at `lr` and the pretrained layers at
`lr * backbone_lr_scale`; `patience` stops a run whose `stop_metric` stopped improving, and the
best weights are chosen by the same metric (stats.py holds the rule). They are written whenever
they improve (after that epoch joins the history, so the file always describes itself), so a
cancel or crash leaves the best model so far on disk; at the end the file is rewritten once with
the full history and final status (what it records: checkpoint.run_meta). Beside it,
`<checkpoint>.resume` holds the last epoch's weights, optimizer, scheduler and random state, so an
interrupted run continues where it stopped (resume.py); it is removed when the run completes. A run
stops early when its `cancel` (`ShouldStop`) says so, polled between batches: a user's cancel, a
time limit, or its reader gone (runner.py).

Under `torchrun` (WORLD_SIZE > 1) each process trains on its shard of the data with
DistributedDataParallel (gloo on CPU, NCCL on GPUs); epoch metrics are summed over processes and
only rank 0 writes the checkpoint, in the same format as a single-process run.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import new_checkpoint_path, run_meta, save_checkpoint
from .config import TrainConfig
from .data import Dataset, Split, eval_batches, load_dataset, memory_budget_bytes, train_batches
from .device import (autocast, batch_slices, describe_device, inference_batch_size, pick_device,
                     rank_and_world)
from .models import (Preprocessing, after_cut, before_cut, blocks, build_model, freeze_backbone, freeze_before,
                     get_head, headless, preprocessing_for)
from .resume import best_so_far, load_resume_state, restore_training_state, resume_path, save_resume_state
from .stats import improves, stop_reason


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
    cache: str = ""  # what the run caches of its frozen part (CachePlan.describe), "" when nothing
    stop_reason: str = ""  # on the last epoch of a run that stopped early: why


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
    """What trains in each epoch: the one place the modes differ in what learns.

    An epoch trains everything from a cut on: the head alone (cut = the number of blocks: fixed
    mode, progressive's first epochs), the last `train_blocks` blocks and the head, or every block
    (cut 0). Whatever lies before the cut is frozen and in eval mode, so it is a fixed function of
    its input, and its output is computed once per augmented view and cached."""
    frozen_epochs: int  # the head alone trains in epochs 1..frozen_epochs
    train_blocks: int  # afterwards the last this many blocks train with the head; 0: all of them
    blocks: int  # how many the backbone has (models.blocks)

    @classmethod
    def for_config(cls, cfg: TrainConfig, blocks: int) -> "UnfreezeSchedule":
        frozen = {"finetune": 0, "fixed": cfg.epochs, "progressive": cfg.frozen_epochs}[cfg.mode]
        return cls(frozen, min(cfg.train_blocks, blocks), blocks)

    def head_only(self, epoch: int) -> bool:
        return epoch <= self.frozen_epochs

    def cut(self, epoch: int) -> int:
        """Index of the first block that trains in `epoch`."""
        if self.head_only(epoch):
            return self.blocks
        return self.blocks - self.train_blocks if self.train_blocks else 0

    def changes_at(self, epoch: int) -> bool:
        """Whether `apply` must run before `epoch` (the first, or when what trains changes)."""
        return epoch == 1 or self.cut(epoch) != self.cut(epoch - 1)

    def apply(self, model: nn.Module, epoch: int) -> None:
        """Set which parameters get gradients in `epoch`. Frozen parameters get none, so one
        optimizer over every parameter leaves them alone until they are unfrozen."""
        if self.head_only(epoch):
            freeze_backbone(model)
        else:
            freeze_before(model, self.cut(epoch))


@dataclass
class CachePlan:
    """How much of the frozen part's output a run keeps, decided before any of it is computed:
    within the memory budget, the val set first (it is reused every epoch), then as many train
    views as fit, up to `feature_views`. With no train view cached the frozen part runs on every
    batch (fresh augmentation each epoch, at the cost of its forward pass)."""
    what: str  # "pooled features" or "activations after block 14 of 19"
    image_bytes: int  # one image's cached output
    views: int  # train views cached (0: the frozen part runs every batch)
    val: bool
    total_bytes: int
    budget_bytes: int

    def describe(self) -> str:
        mb = self.total_bytes / 2**20
        cached = (f"{self.views} train view(s)" if self.views else "no train view (frozen part runs every batch)")
        return (f"cache of {self.what}: {cached}{' + val' if self.val else ''}, {mb:.1f} MB "
                f"of a {self.budget_bytes / 2**20:.0f} MB budget")


# Activations between blocks are 10-50x larger than pooled features, and training on fp16 copies of
# them reached the same accuracy as fp32 (README, "Training the last blocks"); pooled features
# stay fp32.
ACTIVATION_DTYPE = torch.float16


def plan_cache(what: str, image_bytes: int, n_train: int, n_val: int, views: int, budget: int) -> CachePlan:
    val = n_val * image_bytes <= budget
    room = budget - (n_val * image_bytes if val else 0)
    views = min(views, room // max(1, n_train * image_bytes))
    return CachePlan(what, image_bytes, views, val, (views * n_train + val * n_val) * image_bytes, budget)


@dataclass
class Best:
    """The best epoch so far by the run's stop metric (stats.improves), with its weights."""
    val_acc: float = 0.0
    val_loss: float = math.inf
    epoch: int = 0
    state_dict: dict | None = field(default=None, repr=False)

    def beaten_by(self, val_acc: float, val_loss: float, metric: str = "val_acc") -> bool:
        return self.state_dict is None or improves((val_acc, val_loss), (self.val_acc, self.val_loss), metric)


class Cancelled(Exception):
    pass


class ShouldStop(Protocol):
    """What a run polls between batches to know it should stop: a threading.Event, a cancel file,
    a deadline, or any of several (runner.py)."""

    def is_set(self) -> bool: ...


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (the tutorial's) or AdamW over every parameter; the new head at `lr`, the pretrained
    rest at `lr * backbone_lr_scale`."""
    head = list(get_head(model).parameters())
    backbone = [p for p in model.parameters() if all(p is not h for h in head)]
    groups = [{"params": backbone, "lr": cfg.lr * cfg.backbone_lr_scale}, {"params": head, "lr": cfg.lr}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)


@dataclass
class TrainingRun:
    config: TrainConfig
    dataset: Dataset | None = None  # pass a loaded one to skip the scan (the app shows it first)
    cancel: ShouldStop = field(default_factory=threading.Event)  # an Event never set: no early stop
    # on_progress(stage, done, total) during long steps within an epoch, at most once per batch:
    # "decoding images", "caching train features", "caching val features" (images), "training" (batches,
    # from 0 when the epoch starts), "validating" (0 of the val images, when validation starts)
    on_progress: Callable[[str, int, int], None] | None = None
    # results, filled in while iterating
    history: list[EpochRecord] = field(default_factory=list)
    checkpoint_path: str | None = None
    status: str = "pending"  # pending, running, completed, cancelled
    stop_reason: str = ""  # set when early stopping ends the run before its last epoch
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
    # What trains this epoch: the frozen part before the cut (None: nothing is frozen) and the
    # part after it (`tail`; `trained` is it DDP-wrapped), so `model(x) == tail(frozen(x))`.
    frozen: Callable[[torch.Tensor], torch.Tensor] | None = field(init=False, repr=False)
    tail: nn.Module = field(init=False, repr=False)
    trained: nn.Module = field(init=False, repr=False)
    cache: CachePlan | None = field(init=False, repr=False)
    cache_dtype: torch.dtype = field(init=False, repr=False)
    train_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(init=False, repr=False)  # view -> (x, y)
    val_cache: tuple[torch.Tensor, torch.Tensor] | None = field(init=False, repr=False)
    since_better_loss: int = field(init=False, repr=False)  # epochs since val loss last fell
    lowest_val_loss: float = field(init=False, repr=False)
    first_epoch: int = field(init=False, repr=False)

    def _setup(self) -> None:
        cfg = self.config
        self.rank, self.world = rank_and_world()
        torch.manual_seed(cfg.seed + self.rank)  # DDP copies rank 0's initial weights to the others
        self.preprocessing = preprocessing_for(cfg.arch, cfg.image_size)
        if self.dataset is None:
            self.dataset = load_dataset(cfg.data_dir, self.preprocessing, on_progress=self.on_progress,
                                        memory_budget_mb=cfg.memory_budget_mb)
        splits = self.dataset.splits
        self.train_split = shard(splits["train"], self.rank, self.world, pad=True) if self.world > 1 else splits["train"]
        self.val_split = shard(splits["val"], self.rank, self.world, pad=False) if self.world > 1 else splits["val"]
        self.device = pick_device(cfg.device)
        model = build_model(cfg.arch, len(self.dataset.classes), cfg.backbone_weights)
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.schedule = UnfreezeSchedule.for_config(cfg, len(blocks(self.model)))
        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.cache, self.train_cache, self.val_cache = None, {}, None
        self.checkpoint_path = cfg.checkpoint_path or new_checkpoint_path(cfg)
        self.best, self.history, self.stop_reason = Best(), [], ""
        self.first_epoch = 1
        if cfg.resume_from:
            self._restore(load_resume_state(cfg.resume_from))
        self.status = "running"

    def __iter__(self) -> Iterator[EpochRecord]:
        self._setup()
        cfg = self.config
        yield from list(self.history)  # a resumed run replays the epochs it restored
        try:
            for epoch in range(self.first_epoch, cfg.epochs + 1):
                start = time.perf_counter()
                if epoch == self.first_epoch or self.schedule.changes_at(epoch):
                    self.schedule.apply(self.model, epoch)
                    self._split_at(epoch)  # after `apply`: the DDP wrap registers the parameters that train
                lr = self.optimizer.param_groups[-1]["lr"]
                train_loss, train_acc = self._train_epoch(epoch)
                val_loss, val_acc = self._validate()
                self.scheduler.step()
                improved = self.best.beaten_by(val_acc, val_loss, cfg.stop_metric)
                if improved:
                    self.best = Best(val_acc, val_loss, epoch, copy.deepcopy(self.model.state_dict()))
                if epoch < cfg.epochs:  # the same rule as the best checkpoint's (stats.stop_reason)
                    scores = [(r.val_acc, r.val_loss) for r in self.history] + [(val_acc, val_loss)]
                    self.stop_reason = stop_reason(scores, cfg.patience, cfg.stop_metric)
                record = EpochRecord(epoch, cfg.epochs, train_loss, train_acc, val_loss, val_acc, lr,
                                     time.perf_counter() - start, self.best.val_acc, self.best.epoch,
                                     self.cache.describe() if self.cache else "", self.stop_reason)
                self.history.append(record)  # before saving: the file's history includes its best epoch
                if improved:
                    self._save()
                if not self.stop_reason and epoch < cfg.epochs:
                    self._save_resume_state(epoch)
                yield record
                if self.stop_reason:
                    break
            self.status = "completed"
        except Cancelled:
            self.status = "cancelled"
        finally:
            if self.best.state_dict is not None and self.status in ("completed", "cancelled"):
                self._save()  # once more, with the whole history and final status
            if self.status == "completed" and self.rank == 0:
                resume_path(self.checkpoint_path).unlink(missing_ok=True)

    # -- what trains -------------------------------------------------------------------------------

    def _split_at(self, epoch: int) -> None:
        """Split the model at this epoch's cut, and plan the cache of the frozen part's output."""
        cut = self.schedule.cut(epoch)
        if self.schedule.head_only(epoch):
            self.frozen, self.tail, what = self._pooled_features, get_head(self.model), "pooled features"
        elif cut > 0:
            self.frozen, self.tail = before_cut(self.model, cut), after_cut(self.model, cut)
            what = f"activations after block {cut} of {self.schedule.blocks}"
        else:
            self.frozen, self.tail, what = None, self.model, ""
        self.trained = self._distributed(self.tail)
        self.train_cache, self.val_cache, self.cache = {}, None, None
        if self.frozen is not None:
            crop = self.preprocessing.crop_size
            with torch.inference_mode():
                self.model.eval()
                one = self.frozen(torch.zeros(1, 3, crop, crop, device=self.device))
            dtype = torch.float32 if self.schedule.head_only(epoch) else ACTIVATION_DTYPE
            self.cache = plan_cache(what, one.numel() * dtype.itemsize, len(self.train_split), len(self.val_split),
                                    self.config.feature_views, memory_budget_bytes(self.config.memory_budget_mb))
            self.cache_dtype = dtype

    def _pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        with headless(self.model):
            return self.model(x)

    # -- one epoch ---------------------------------------------------------------------------------

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        """(mean loss, accuracy) over this epoch's augmented train set."""
        self.model.eval()  # the frozen part, BatchNorm statistics included, is a fixed function
        self.trained.train()
        if self.config.freeze_bn:  # BatchNorm keeps its ImageNet statistics (TrainConfig.freeze_bn)
            for m in self.trained.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        n = len(self.train_split)
        steps = len(batch_slices(n, self.config.batch_size))
        loss_sum, correct = 0.0, 0
        self._progress("training", 0, steps)  # a one-batch epoch would otherwise show nothing new until it ends
        for step, (x, y) in enumerate(self._train_batches(epoch), 1):
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
            loss = nn.functional.cross_entropy(out.float(), y, label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item() * len(y), (out.argmax(1) == y).sum().item()

    def _train_batches(self, epoch: int):
        """This epoch's batches for `trained`: images when everything trains; else the frozen
        part's output, from the cache (`cache.views` augmented views of the train set, cycled
        through the epochs, each computed the first time it is needed) or, when no view fits,
        computed batch by batch."""
        bs = self.config.batch_size
        if self.frozen is None or self.cache.views == 0:
            for x, y in train_batches(self.train_split, self.preprocessing, bs, device=self.device):
                x = self._to_device(x)
                if self.frozen is not None:
                    with torch.no_grad(), self._autocast():
                        x = self.frozen(x).float()
                yield x, y.to(self.device)
            return
        view = (epoch - self.first_epoch) % self.cache.views
        if view not in self.train_cache:
            views = train_batches(self.train_split, self.preprocessing, inference_batch_size(self.device), shuffle=False,
                                  device=self.device)
            self.train_cache[view] = self._cached(views, "caching train features", len(self.train_split))
        x, y = self.train_cache[view]
        order = torch.randperm(len(y), device=self.device)
        for s in batch_slices(len(y), bs):
            yield self._from_cache(x[order[s]]), y[order[s]]

    def _cached(self, batches, stage: str, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys, done = [], [], 0
        with torch.inference_mode(), self._autocast():
            for x, y in batches:
                self._check_cancel()
                xs.append(self.frozen(self._to_device(x)).to(self.cache_dtype))
                ys.append(y.to(self.device))
                done += len(y)
                self._progress(stage, done, total)
        return torch.cat(xs), torch.cat(ys)

    def _from_cache(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x

    def _validate(self) -> tuple[float, float]:
        self.model.eval()
        self._progress("validating", 0, len(self.val_split))
        if self.frozen is None or not self.cache.val:
            return self._evaluate(self.model, self._val_batches())
        if self.val_cache is None:
            self.val_cache = self._cached(self._val_batches(), "caching val features", len(self.val_split))
        x, y = self.val_cache
        chunks = batch_slices(len(y), inference_batch_size(self.device))
        return self._evaluate(self.tail, ((self._from_cache(x[s]), y[s]) for s in chunks))

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
        return eval_batches(self.val_split, self.preprocessing.crop_size, inference_batch_size(self.device), self.device)

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
        best = {"val_acc": self.best.val_acc, "val_loss": self.best.val_loss, "epoch": self.best.epoch}
        device = describe_device(self.device) + (f" x {self.world} processes" if self.world > 1 else "")
        meta = run_meta(self.config, self.dataset, self.preprocessing, self.history, best, self.status,
                        self.stop_reason, device)
        save_checkpoint(self.checkpoint_path, self.best.state_dict, meta)

    def _save_resume_state(self, epoch: int) -> None:
        """What `_restore` needs to continue after `epoch`, written atomically beside the checkpoint
        (which holds the best so far)."""
        if self.rank != 0:
            return
        save_resume_state(self.checkpoint_path, self.config, epoch, self.model, self.optimizer, self.scheduler,
                          self.history)

    def _restore(self, state: dict) -> None:
        restore_training_state(state, self.model, self.optimizer, self.scheduler)
        self.history = [EpochRecord(**r) for r in state["history"]]
        b = best_so_far(state, self.checkpoint_path)
        self.best = Best(b["val_acc"], b["val_loss"], b["epoch"], {k: v.to(self.device) for k, v in b["state_dict"].items()})
        self.first_epoch = state["epoch"] + 1
