"""Candidate training recipes compared by cross-validation, to choose defaults that hold on any set.

    python -m bench.recipe --data ../shared/data/hymenoptera_data --folds 5 --seeds 0
    python -m bench.recipe --data /tmp/bees_ants_cv_data/digits --seeds 0 1   # its own train/val split
    python -m bench.recipe --table                                          # the tables, as markdown

With `--folds k` the set's train and val images are pooled and cut into k stratified folds
(stats.stratified_folds); each fold is the val set of one run trained on the other k-1. Without
it, the set's own split is used. Every candidate trains MobileNetV2 from the stand-in ImageNet
weights for `--epochs` epochs with no early stopping, so the whole val curve is kept; the early
stopping rules are then replayed on those curves (stats.stop_reason is a pure function of them).
Rows append to bench/results/recipe.json, one per dataset x candidate x fold x seed with its curve,
and rows already there are skipped, so an interrupted sweep continues where it stopped.

What it costs decides how: the machine is a shared 2-core CPU. Every candidate trains the last 5
of MobileNetV2's 19 blocks and the head (`--train-blocks 5`, the fine-tune such a CPU affords; the
fixed extractor and progressive's first epochs train the head alone), and the 14 frozen blocks
before them are a fixed function of the image, so their output is computed ONCE per dataset (one
augmented view of every image for training, the centre crop for validation, fp16 as the app caches
it) and shared by every candidate, fold and seed. The epochs themselves use the app's own pieces
(model, optimizer and schedule builders, UnfreezeSchedule, the loss with label smoothing, BatchNorm
freezing as TrainingRun does it). The whole network is measured separately (`python -m bees_ants
train` on ants/bees, RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from bees_ants.config import TrainConfig
from bees_ants.data import augment_batch, center_crop_batch, load_dataset
from bees_ants.device import batch_slices
from bees_ants.models import after_cut, before_cut, blocks, build_model, get_head, preprocessing_for
from bees_ants.stats import stop_reason, stratified_folds
from bees_ants.train import UnfreezeSchedule, make_optimizer, make_scheduler

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2-imagenet-dequant.pth"
RESULTS = REPO / "bench" / "results" / "recipe.json"
CACHE = Path("/tmp/bees_ants_recipe_cache")  # the frozen blocks' output per dataset, reused by later sweeps
TRAIN_BLOCKS = 5
BASE = dict(arch="mobilenet_v2", mode="finetune", batch_size=32, patience=0, train_blocks=TRAIN_BLOCKS,
            lr=0.01, backbone_lr_scale=0.1)
CANDIDATES = {  # in the order they run: the most telling first, should a sweep be cut short
    "fixed": dict(mode="fixed", lr=0.001, backbone_lr_scale=1.0),
    "ft": {},  # the fine-tune defaults before this sweep: head 0.01, backbone x0.1, StepLR 7 x 0.1
    "ft frozen BN": dict(freeze_bn=True),
    "ft cosine": dict(lr_schedule="cosine"),
    "ft frozen BN cosine": dict(freeze_bn=True, lr_schedule="cosine"),
    "ft bb x0.03": dict(backbone_lr_scale=0.03),
    "ft smoothing 0.1": dict(label_smoothing=0.1),
    "progressive 2": dict(mode="progressive", frozen_epochs=2),
    "ft lr 0.003 bb x0.3": dict(lr=0.003, backbone_lr_scale=0.3),
    "ft lr 0.003 frozen BN cosine": dict(lr=0.003, freeze_bn=True, lr_schedule="cosine"),
    "progressive 2 frozen BN cosine": dict(mode="progressive", frozen_epochs=2, freeze_bn=True, lr_schedule="cosine"),
}
PATIENCE = 3  # the rules are replayed with the default patience


def frozen_outputs(data: str) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int], int]:
    """((train view, val view, labels, classes), train images) of the set, train and val pooled
    (train first): the output of the frozen blocks for one augmented view and for the centre crop."""
    pre = preprocessing_for("mobilenet_v2")
    dataset = load_dataset(data, pre)
    images = dataset.splits["train"].images + dataset.splits["val"].images
    labels = torch.cat([dataset.splits["train"].labels, dataset.splits["val"].labels])
    model = build_model("mobilenet_v2", len(dataset.classes), str(WEIGHTS)).eval()
    frozen = before_cut(model, len(blocks(model)) - TRAIN_BLOCKS)
    torch.manual_seed(0)
    views = []
    for make in (lambda b: augment_batch(b, pre), lambda b: center_crop_batch(b, pre.crop_size)):
        with torch.inference_mode():
            views.append(torch.cat([frozen(pre.normalize(make(images[s]))).half()
                                    for s in batch_slices(len(images), 32)]))
    return (views[0], views[1], labels, len(dataset.classes)), len(dataset.splits["train"])


def folds_of(labels: torch.Tensor, n_train: int, k: int):
    """(fold name, train indices, val indices): the set's own split, or k stratified folds."""
    if not k:
        yield "split", list(range(n_train)), list(range(n_train, len(labels)))
        return
    for i, val_idx in enumerate(stratified_folds(labels.tolist(), k, seed=0)):
        held = set(val_idx)
        yield f"{i + 1}/{k}", [j for j in range(len(labels)) if j not in held], val_idx


def run_one(cached, train_idx: list[int], val_idx: list[int], candidate: str, seed: int, epochs: int) -> dict:
    """One candidate's val curve, trained on `train_idx` of the cached outputs."""
    train_x, val_x, labels, classes = cached
    cfg = TrainConfig(**{**BASE, **CANDIDATES[candidate]}, data_dir="", epochs=epochs, seed=seed)
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = build_model(cfg.arch, classes, str(WEIGHTS))
    tail = after_cut(model, len(blocks(model)) - TRAIN_BLOCKS)
    schedule = UnfreezeSchedule.for_config(cfg, len(blocks(model)))
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    xt, yt = train_x[train_idx], labels[train_idx]
    xv, yv = val_x[val_idx].float(), labels[val_idx]
    accs, losses = [], []
    for epoch in range(1, epochs + 1):
        schedule.apply(model, epoch)
        tail.eval() if schedule.head_only(epoch) else tail.train()  # head-only: the rest is fixed
        get_head(model).train()
        if cfg.freeze_bn:
            for m in tail.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        order = torch.randperm(len(yt))
        for s in batch_slices(len(yt), cfg.batch_size):
            loss = nn.functional.cross_entropy(tail(xt[order[s]].float()), yt[order[s]],
                                               label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        tail.eval()
        with torch.inference_mode():
            out = torch.cat([tail(xv[s]) for s in batch_slices(len(yv), 64)])
        losses.append(nn.functional.cross_entropy(out, yv).item())
        accs.append((out.argmax(1) == yv).float().mean().item())
    return {"val_acc": accs, "val_loss": losses, "n_val": len(val_idx), "n_train": len(train_idx),
            "seconds": round(time.perf_counter() - start, 1)}


def sweep(results: Path, data: str, k: int, seeds: list[int], epochs: int, names: list[str]) -> None:
    rows = json.loads(results.read_text()) if results.is_file() else []
    done = {(r["dataset"], r["candidate"], r["fold"], r["seed"], r["epochs"]) for r in rows}
    name = Path(data).name + (f" ({k}-fold)" if k else "")
    kept = CACHE / f"{Path(data).resolve().as_posix().strip('/').replace('/', '_')}.pt"
    if kept.is_file():
        cached, n_train = torch.load(kept, weights_only=True)
    else:
        start = time.perf_counter()
        cached, n_train = frozen_outputs(data)
        print(f"{name}: frozen blocks' output computed in {time.perf_counter() - start:.0f}s", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save((cached, n_train), kept)
    for seed in seeds:
        for fold, train_idx, val_idx in folds_of(cached[2], n_train, k):
            for candidate in names:
                if (name, candidate, fold, seed, epochs) in done:
                    continue
                row = {"dataset": name, "candidate": candidate, "fold": fold, "seed": seed, "epochs": epochs,
                       **run_one(cached, train_idx, val_idx, candidate, seed, epochs)}
                rows.append(row)
                results.write_text(json.dumps(rows, indent=1))
                print(f"{name} fold {fold} seed {seed} {candidate}: best {max(row['val_acc']):.3f} "
                      f"last {row['val_acc'][-1]:.3f} ({row['seconds']}s)", flush=True)


def replay(row: dict, metric: str) -> tuple[int, float, float]:
    """Where `metric` with patience PATIENCE stops this curve: (epochs run, best val acc by then,
    last val acc then)."""
    scores = list(zip(row["val_acc"], row["val_loss"]))
    for e in range(1, len(scores) + 1):
        if e == len(scores) or stop_reason(scores[:e], PATIENCE, metric):
            break
    return e, max(row["val_acc"][:e]), row["val_acc"][e - 1]


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def table(results: Path) -> str:
    rows = json.loads(results.read_text())
    out = []
    for dataset, epochs in dict.fromkeys((r["dataset"], r["epochs"]) for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset and r["epochs"] == epochs]
        r0 = mine[0]
        out += [f"\n#### {dataset}: {r0['n_train']} train / {r0['n_val']} val per run, {r0['epochs']} epochs\n",
                "| candidate | runs | best val acc | last-epoch val acc | best − last | patience 3 on val acc: "
                "epochs, last acc, lost | patience 3 on val loss: epochs, last acc, lost | s/run |",
                "|---|---|---|---|---|---|---|---|"]
        for candidate in CANDIDATES:
            runs = [r for r in mine if r["candidate"] == candidate]
            if not runs:
                continue
            best = [max(r["val_acc"]) for r in runs]
            last = [r["val_acc"][-1] for r in runs]
            rules = []
            for metric in ("val_acc", "val_loss"):
                stops = [replay(r, metric) for r in runs]
                rules.append(f"{statistics.mean(s[0] for s in stops):.1f}, {statistics.mean(s[2] for s in stops):.3f}, "
                             f"{statistics.mean(b - s[1] for b, s in zip(best, stops)):.3f}")
            out.append(f"| {candidate} | {len(runs)} | {mean_sd(best)} | {mean_sd(last)} | "
                       f"{statistics.mean(b - l for b, l in zip(best, last)):.3f} | {rules[0]} | {rules[1]} | "
                       f"{statistics.mean(r['seconds'] for r in runs):.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="a train/val folder")
    ap.add_argument("--folds", type=int, default=0, help="k-fold over train+val pooled (default: the set's own split)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--candidates", nargs="+", choices=sorted(CANDIDATES), default=list(CANDIDATES))
    ap.add_argument("--results", default=str(RESULTS), help="the JSON rows go to (default %(default)s)")
    ap.add_argument("--table", action="store_true", help="print the results as markdown tables and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table(Path(args.results)))
        return 0
    if not args.data:
        ap.error("--data is required (or --table)")
    sweep(Path(args.results), args.data, args.folds, args.seeds, args.epochs, args.candidates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
