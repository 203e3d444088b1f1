"""Command line: `python -m bees_ants train|predict|evaluate …` (see --help of each)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields
from pathlib import Path

from .checkpoint import CheckpointError
from .data import IMAGE_EXTENSIONS, DatasetError, ensure_hymenoptera
from .importer import needs_preparing, prepare_dataset
from .models import ARCHS, DEFAULT_ARCH, ModelError
from .device import describe_device, init_distributed, rank_and_world
from .train import MODES, PRESETS, TrainConfig, TrainingRun, apply_preset

DEFAULT_DATA_ROOT = "data"  # the tutorial's dataset is fetched to data/hymenoptera_data


def resolve_data_dir(data_dir: str | None) -> str:
    if data_dir and needs_preparing(data_dir):  # a zip, or bare class folders: import as a new train/val folder
        report = prepare_dataset(data_dir, DEFAULT_DATA_ROOT)
        print(f"{report.summary()}\n(reuse it with --data-dir {report.path})", flush=True)
        return report.path
    return data_dir if data_dir else str(ensure_hymenoptera(DEFAULT_DATA_ROOT))


def backbone_weights_arg(value: str) -> str | None:
    return None if value.lower() == "none" else value


def format_record(r) -> str:
    return (f"epoch {r.epoch:>3}/{r.epochs}  train loss {r.train_loss:.4f} acc {r.train_acc:.4f}  "
            f"val loss {r.val_loss:.4f} acc {r.val_acc:.4f}  lr {r.lr:.2g}  {r.seconds:6.1f}s  "
            f"best {r.best_val_acc:.4f} (epoch {r.best_epoch})")


def cmd_train(args) -> int:
    defaults = TrainConfig(data_dir="")
    config = apply_preset(defaults, args.preset) if args.preset else defaults
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    overrides["data_dir"] = resolve_data_dir(args.data_dir)
    if args.backbone_weights is not None:
        overrides["backbone_weights"] = backbone_weights_arg(args.backbone_weights)
    config = TrainConfig(**{**asdict(config), **overrides})
    init_distributed()  # under torchrun: one process per device, same checkpoint format
    if rank_and_world()[0] != 0:
        list(TrainingRun(config))  # other ranks train silently; rank 0 reports and saves
        return 0
    run = TrainingRun(config)
    print(f"training {config.arch} ({config.mode}) for {config.epochs} epochs, batch {config.batch_size}, "
          f"lr {config.lr}, weights {config.backbone_weights or 'random init'}", flush=True)
    try:
        for i, record in enumerate(run):
            if i == 0:
                print(f"device {describe_device(run.device)}", flush=True)
            print(format_record(record), flush=True)
    except KeyboardInterrupt:
        saved = run.checkpoint_path and Path(run.checkpoint_path).is_file()
        print(f"\ninterrupted; " + (f"best checkpoint so far: {run.checkpoint_path}" if saved
                                   else "no epoch finished, so no checkpoint was written"), file=sys.stderr)
        return 130
    best = max(run.history, key=lambda r: r.val_acc)
    print(run.dataset.summary())
    print(f"done: best val acc {best.val_acc:.4f} at epoch {best.epoch}, "
          f"{sum(r.seconds for r in run.history):.1f}s training; checkpoint {run.checkpoint_path}")
    if args.json:
        print(json.dumps({"checkpoint": run.checkpoint_path, "best_val_acc": best.val_acc,
                          "best_epoch": best.epoch, "history": [asdict(r) for r in run.history]}))
    return 0


def expand_inputs(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            out.append(p)  # a missing or unreadable file becomes that file's error line
    return out


def cmd_predict(args) -> int:
    from .predict import Predictor, predictions_figure
    predictor = Predictor(args.checkpoint, device=args.device)
    files = expand_inputs(args.images)
    if not files:
        raise DatasetError("no image files found in the given paths")
    results = predictor.predict(files, names=[str(f) for f in files])
    for r in results:
        if r.error:
            print(f"{r.name}\tERROR\t{r.error}")
        else:
            probs = " ".join(f"{c}={p:.3f}" for c, p in r.probabilities.items())
            print(f"{r.name}\t{r.label}\t{r.confidence:.3f}\t{probs}")
    if args.grid:
        predictions_figure(results).savefig(args.grid, dpi=100)
        print(f"grid saved to {args.grid}", file=sys.stderr)
    failed = sum(r.error is not None for r in results)
    if failed:
        print(f"{failed} of {len(results)} file(s) could not be classified", file=sys.stderr)
    return 1 if failed else 0


def cmd_evaluate(args) -> int:
    from .predict import Predictor
    predictor = Predictor(args.checkpoint, device=args.device)
    ev = predictor.evaluate(resolve_data_dir(args.data_dir), args.split)
    recorded = predictor.checkpoint.meta.get("best", {}).get("val_acc")
    print(f"{args.split} accuracy {ev.accuracy:.4f} ({sum(a == b for a, b in zip(ev.true, ev.predicted))}"
          f"/{len(ev.true)}), loss {ev.loss:.4f}"
          + (f"; recorded best val acc {recorded:.4f}" if recorded is not None else ""))
    width = max(len(c) for c in ev.classes)
    print(f"{'class':<{width}}  images  precision  recall")
    for name, m in ev.per_class().items():
        print(f"{name:<{width}}  {m['images']:>6}  {m['precision']:>9.3f}  {m['recall']:>6.3f}")
    print("confusion (rows: true, columns: predicted)")
    print(" " * width + "  " + " ".join(f"{c[:8]:>8}" for c in ev.classes))
    for name, row in zip(ev.classes, ev.confusion):
        print(f"{name:<{width}}  " + " ".join(f"{v:>8}" for v in row))
    return 0


def cmd_export(args) -> int:
    from .export import export_program
    path = export_program(args.checkpoint, args.output)
    print(f"exported to {path} (load with torch.export.load; see bees_ants/export.py)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bees_ants", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a classifier on an image folder")
    t.add_argument("--data-dir", help="folder with train/<class>/ and val/<class>/, or a zip or folder of "
                   "<class>/ folders (imported into data/) (default: the tutorial's ants/bees set, downloaded to data/)")
    t.add_argument("--arch", choices=ARCHS, help=f"backbone (default {DEFAULT_ARCH})")
    t.add_argument("--mode", choices=MODES, help="finetune: train all layers (default); "
                   "fixed: frozen feature extractor, train the head only; "
                   "progressive: fixed for --frozen-epochs, then fine-tune")
    t.add_argument("--backbone-weights", metavar="imagenet|none|PATH",
                   help="imagenet: torchvision's weights (downloaded once, cached; default); "
                   "PATH: a local state-dict file for this arch; none: random init")
    t.add_argument("--preset", choices=sorted(PRESETS), help="tutorial: its exact recipe, batch 4 included")
    t.add_argument("--epochs", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--momentum", type=float)
    t.add_argument("--batch-size", type=int, dest="batch_size")
    t.add_argument("--step-size", type=int, dest="step_size", help="StepLR: epochs between LR drops")
    t.add_argument("--gamma", type=float, help="StepLR: LR multiplier at each drop")
    t.add_argument("--feature-views", type=int, dest="feature_views",
                   help="fixed mode: augmented views of the train set to cache features for")
    t.add_argument("--frozen-epochs", type=int, dest="frozen_epochs",
                   help="progressive mode: head-only epochs before unfreezing (default 5)")
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    t.add_argument("--out-dir", dest="out_dir", help="where checkpoints go (default weights/)")
    t.add_argument("--output", dest="checkpoint_path", help="checkpoint file path (overrides --out-dir)")
    t.add_argument("--json", action="store_true", help="also print a JSON summary line")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="classify image files (or folders of them)")
    pr.add_argument("checkpoint")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--grid", metavar="PNG", help="save a labelled image grid")
    pr.add_argument("--device")
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="accuracy of a checkpoint on a dataset split")
    ev.add_argument("checkpoint")
    ev.add_argument("--data-dir")
    ev.add_argument("--split", choices=("train", "val"), default="val")
    ev.add_argument("--device")
    ev.set_defaults(func=cmd_evaluate)

    ex = sub.add_parser("export", help="export a checkpoint to a torch.export program (.pt2) that needs only torch")
    ex.add_argument("checkpoint")
    ex.add_argument("--output", help="default: the checkpoint path with .pt2")
    ex.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, ModelError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
