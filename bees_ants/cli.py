"""Command line: `python -m bees_ants train|predict|evaluate|export|push …` (see --help of each).

Only argparse and torch-free modules are imported here (settings, config): each command imports
what it needs when it runs, so `--help` answers at once instead of after a torch import. Locations
(data root, weights folder, backbone weights) come from the same environment variables as the app;
see bees_ants/settings.py.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path

from .config import (ARCHS, DEFAULT_ARCH, LR_SCHEDULES, MODE_DEFAULTS, MODES, OPTIMIZERS, PRESETS, ConfigError,
                     TrainConfig, arch_of_file, recipe)
from .errors import UserError
from .settings import Settings
from .stats import STOP_METRIC_TEXT, STOP_METRICS, interval_text

DEFAULTS = TrainConfig(data_dir="")  # the hyperparameter defaults --help shows


def resolve_data_dir(data_dir: str | None, settings: Settings | None = None) -> str:
    """A train/val folder as given; a zip or a folder of bare class folders imported into the data
    root first; no path: the tutorial's set, downloaded into the data root on first use."""
    from .data import ensure_hymenoptera
    from .importer import needs_preparing, prepare_dataset
    settings = settings or Settings.from_env()
    if data_dir and needs_preparing(data_dir):
        report = prepare_dataset(data_dir, settings.data_root)
        print(f"{report.summary()}\n(reuse it with --data-dir {report.path})", flush=True)
        return report.path
    return data_dir if data_dir else str(ensure_hymenoptera(settings.data_root))


def backbone_weights_arg(value: str) -> str | None:
    return None if value.lower() == "none" else value


def format_record(r) -> str:
    return (f"epoch {r.epoch:>3}/{r.epochs}  train loss {r.train_loss:.4f} acc {r.train_acc:.4f}  "
            f"val loss {r.val_loss:.4f} acc {r.val_acc:.4f}  lr {r.lr:.2g}  {r.seconds:6.1f}s  "
            f"best {r.best_val_acc:.4f} (epoch {r.best_epoch})")


class ProgressLine:
    """An `on_progress(stage, done, total)` callback for long steps (decoding, feature passes).

    On a terminal: one line rewritten in place ('\\r'), ended when the stage completes. Otherwise
    (a log file, CI): a line only when a stage passes another tenth, so logs stay short."""

    def __init__(self, stream=None, tty: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.stage: str | None = None
        self.done = 0
        self.shown = 0  # percent (terminal) or tenth x 10 (log) last written for this stage
        self.open = False  # a terminal line is waiting for its newline

    def __call__(self, stage: str, done: int, total: int) -> None:
        if total <= 0:
            return
        done = max(0, min(done, total))
        if stage != self.stage or done < self.done:  # a new stage, or the same one again (next pass)
            self.end()
            self.stage, self.shown = stage, -1 if self.tty else 0  # a log skips 0%
        self.done = done
        step = done * 100 // total if self.tty else done * 10 // total * 10
        if step <= self.shown:
            return
        self.shown = step
        text = f"{stage}: {done}/{total} ({step if self.tty else done * 100 // total}%)"
        if self.tty:
            self.stream.write(f"\r{text}\x1b[K")
            self.open = done < total
            if not self.open:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        """End an unfinished terminal line, before other output."""
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False


def mode_note_for(mode: str, device) -> str:
    """Why `mode` is the one config.default_mode chose for `device` when no --mode was given."""
    if mode == "fixed":
        return ("no --mode given and this is a CPU, where the fixed extractor takes seconds per epoch and "
                "fine-tuning ~10-30 s per epoch on the ants/bees set (--mode finetune to fine-tune anyway)")
    return f"no --mode given and {device.type.upper()} is available, so every layer trains"


def train_config(args, settings: Settings, on_cpu: bool = False) -> tuple[TrainConfig, str]:
    """The TrainConfig the options ask for (data_dir as given) and a note on where the backbone
    weights came from. config.recipe decides what wins: the options given, then --preset, then the
    mode's defaults, then the installation's (`settings`: the weights folder, and the file
    BEES_ANTS_BACKBONE_WEIGHTS names, with the backbone its name says, as the app starts from it);
    with no --mode, `on_cpu` picks it."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    given["data_dir"] = args.data_dir or ""
    defaults, note = {"out_dir": str(settings.weights_dir), "image_size": settings.image_size}, ""
    if args.backbone_weights is not None:
        given["backbone_weights"] = backbone_weights_arg(args.backbone_weights)
    elif settings.backbone_weights is not None and settings.backbone_weights.is_file():
        defaults["backbone_weights"] = str(settings.backbone_weights)
        note = " (from BEES_ANTS_BACKBONE_WEIGHTS)"
        if arch := arch_of_file(settings.backbone_weights):
            defaults["arch"] = arch
    return recipe(given, preset=args.preset, on_cpu=on_cpu, defaults=defaults), note


def cmd_train(args) -> int:
    from .data import load_dataset
    from .device import describe_device, init_distributed, pick_device, rank_and_world
    from .models import ModelError, preprocessing_for
    from .train import TrainingRun

    settings = Settings.from_env()
    if args.resume:
        from .resume import resume_config
        config, weights_note = resume_config(args.resume), ""
        args.mode, args.data_dir = config.mode, config.data_dir
    else:
        # checked before any download or import; with no --mode, drawn again once the device is known
        config, weights_note = train_config(args, settings)
    try:
        device = pick_device(config.device)
    except RuntimeError as e:  # torch.device("gpu"): not a device name
        raise ConfigError(f"--device {config.device}: {e}") from None
    mode_note = None
    if args.mode is None:  # the device picks the mode, and that mode's defaults apply
        config, weights_note = train_config(args, settings, on_cpu=device.type == "cpu")
        mode_note = mode_note_for(config.mode, device)
    weights = config.backbone_weights
    if weights not in (None, "imagenet") and not Path(weights).is_file():  # before minutes of decoding
        raise ModelError(f"backbone weights file '{weights}' does not exist")
    config = replace(config, data_dir=resolve_data_dir(args.data_dir, settings))

    init_distributed()  # under torchrun: one process per device, same checkpoint format
    if rank_and_world()[0] != 0:
        list(TrainingRun(config))  # other ranks train silently; rank 0 reports and saves
        return 0
    progress = ProgressLine()
    blocks = f", last {config.train_blocks} blocks" if config.train_blocks and config.mode != "fixed" else ""
    print(f"training {config.arch} ({config.mode}{blocks}) for {config.epochs} epochs, batch {config.batch_size}, "
          f"{config.optimizer} lr {config.lr} (backbone x{config.backbone_lr_scale}, {config.lr_schedule}), "
          f"weights {config.backbone_weights or 'random init'}{weights_note}; data {config.data_dir}"
          + (f"; early stop: patience {config.patience} on {STOP_METRIC_TEXT[config.stop_metric]}"
             if config.patience else "")
          + ("; BatchNorm statistics frozen" if config.freeze_bn and config.mode != "fixed" else "")
          + (f"; input {config.image_size} px" if config.image_size else "")
          + (f"; resuming {config.resume_from}" if config.resume_from else ""), flush=True)
    if mode_note:
        print(f"mode {config.mode}: {mode_note}", flush=True)
    print(f"device {describe_device(device)}", flush=True)
    dataset = load_dataset(config.data_dir, preprocessing_for(config.arch, config.image_size), on_progress=progress,
                           memory_budget_mb=config.memory_budget_mb)
    progress.end()
    print(dataset.summary(), flush=True)
    run = TrainingRun(config, dataset, on_progress=progress)
    cache = ""
    try:
        for record in run:
            progress.end()
            if record.cache != cache:  # said once, and again when progressive training moves the cut
                cache = record.cache
                print(cache, flush=True)
            print(format_record(record), flush=True)
            if record.stop_reason:
                print(record.stop_reason, flush=True)
    except KeyboardInterrupt:
        progress.end()
        saved = run.checkpoint_path and Path(run.checkpoint_path).is_file()
        print("\ninterrupted; " + (f"best checkpoint so far: {run.checkpoint_path} (continue with "
                                   f"--resume {run.checkpoint_path})" if saved
                                  else "no epoch finished, so no checkpoint was written"), file=sys.stderr)
        return 130
    best = run.history[-1]  # the run's choice: best val accuracy, ties to the lower val loss
    print(f"done: best val acc {best.best_val_acc:.4f} ({interval_text(best.best_val_acc, len(dataset.splits['val']))}) "
          f"at epoch {best.best_epoch}, last epoch {best.val_acc:.4f}, "
          f"{sum(r.seconds for r in run.history):.1f}s training; checkpoint {run.checkpoint_path}")
    if args.json:
        print(json.dumps({"checkpoint": run.checkpoint_path, "best_val_acc": best.best_val_acc,
                          "best_epoch": best.best_epoch, "history": [asdict(r) for r in run.history]}))
    return 0


def expand_inputs(paths: list[str]) -> list[Path]:
    """Every file given, and every file in the folders given: each gets a line, a file that is not
    an image an ERROR line saying so (none is dropped without a word)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file())
        else:
            out.append(p)  # a missing or unreadable file becomes that file's error line
    return out


def open_model(source: str):
    """A checkpoint path, or the Checkpoint of a Hub model id (user/repo, hf://user/repo); Hub
    access uses huggingface_hub's token (HF_TOKEN or `hf auth login`) for private models."""
    from .hub import hub_id
    repo_id = hub_id(source)
    if repo_id is None:
        return source
    from huggingface_hub import get_token
    from .hub import load_from_hub
    print(f"model {repo_id} from the Hugging Face Hub", file=sys.stderr, flush=True)
    return load_from_hub(repo_id, token=get_token())


def cmd_predict(args) -> int:
    from .predict import Predictor, predictions_figure
    predictor = Predictor(open_model(args.checkpoint), device=args.device)
    files = expand_inputs(args.images)
    if not files:
        raise UserError("no image files found in the given paths")
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
    if args.explain:
        write_explanations(predictor, [f for f, r in zip(files, results) if r.error is None], Path(args.explain))
    failed = sum(r.error is not None for r in results)
    if failed:
        print(f"{failed} of {len(results)} file(s) could not be classified", file=sys.stderr)
    return 1 if failed else 0


EXPLAIN_CHUNK = 32  # images explained, then written, at a time: memory stays flat for any folder


def explanation_names(paths: list[Path]) -> list[str]:
    """'<stem>-gradcam.jpg' per image: characters other than letters, digits, '.', '_' and '-'
    become '_', and a name already taken (equal stems in different folders, or equal but for case)
    gets -2, -3, …"""
    taken, names = set(), []
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "image"
        name, n = f"{stem}-gradcam.jpg", 1
        while name.lower() in taken:
            n += 1
            name = f"{stem}-{n}-gradcam.jpg"
        taken.add(name.lower())
        names.append(name)
    return names


def write_explanations(predictor, files: list[Path], out_dir: Path) -> None:
    """A Grad-CAM overlay per image (the crop the model saw beside where it looked) into `out_dir`,
    and a line per file on stderr saying where it went."""
    from .predict import explanation_figure
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--explain {out_dir}: cannot create that folder ({e.strerror or e})") from None
    targets = [out_dir / name for name in explanation_names(files)]
    print(f"Grad-CAM of the predicted class over {predictor.checkpoint.meta['arch']}'s "
          f"'{predictor.feature_layer}' feature map", file=sys.stderr)
    for start in range(0, len(files), EXPLAIN_CHUNK):
        chunk = files[start:start + EXPLAIN_CHUNK]
        for explanation, target in zip(predictor.explain(chunk, names=[str(f) for f in chunk]), targets[start:]):
            if explanation.error:  # changed since it was classified
                print(f"{explanation.name}: no Grad-CAM overlay ({explanation.error})", file=sys.stderr)
                continue
            explanation_figure(explanation).savefig(target, dpi=100)
            print(f"Grad-CAM of {explanation.name}: {target}", file=sys.stderr)


def evaluation_data_dir(args, checkpoint_meta: dict, settings: Settings) -> tuple[str, str]:
    """(folder, why): --data-dir; else the folder the model was trained on, if it is still there;
    else the tutorial's set (downloaded on first use), if the model has its classes."""
    if args.data_dir:
        return resolve_data_dir(args.data_dir, settings), "from --data-dir"
    recorded = checkpoint_meta.get("dataset", {}).get("root")
    if recorded and (Path(recorded) / args.split).is_dir():
        return recorded, "the dataset this model was trained on"
    missing = f"this model's dataset {recorded} is not here" if recorded else "the model names no dataset"
    if sorted(checkpoint_meta.get("class_names", [])) != ["ants", "bees"]:
        raise UserError(f"{missing}; pass --data-dir with a train/val folder of its classes "
                        f"({', '.join(checkpoint_meta.get('class_names', []))})")
    return resolve_data_dir(None, settings), f"the tutorial's ants/bees set ({missing})"


def cmd_evaluate(args) -> int:
    from .predict import Predictor
    predictor = Predictor(open_model(args.checkpoint), device=args.device)
    data_dir, why = evaluation_data_dir(args, predictor.checkpoint.meta, Settings.from_env())
    print(f"dataset {data_dir} ({why})", flush=True)
    ev = predictor.evaluate(data_dir, args.split)
    recorded = predictor.checkpoint.meta.get("best", {}).get("val_acc")
    print(f"{args.split} accuracy {ev.accuracy:.4f} ({sum(a == b for a, b in zip(ev.true, ev.predicted))}"
          f"/{len(ev.true)}; {interval_text(ev.accuracy, len(ev.true))}), loss {ev.loss:.4f}"
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
    from .export import export_onnx, export_program
    if args.format == "web":
        from .webpage import export_web
        path = export_web(args.checkpoint, args.output, ort_dir=args.ort_dir)
        print(f"exported to {path} and {path}.zip: serve the folder from any static host, e.g. "
              f"`python -m http.server -d {path}` (see README.md)")
    elif args.format == "onnx":
        path = export_onnx(args.checkpoint, args.output)
        print(f"exported to {path} (run with onnxruntime alone; see bees_ants/export.py)")
    else:
        path = export_program(args.checkpoint, args.output)
        print(f"exported to {path} (load with torch.export.load; see bees_ants/export.py)")
    return 0


def cmd_push(args) -> int:
    from huggingface_hub import get_token
    from .checkpoint import load_checkpoint
    from .hub import push_to_hub
    from .predict import Predictor
    checkpoint = load_checkpoint(args.checkpoint)
    evaluation = None
    if not args.no_evaluation:  # the model card's confusion matrix and per-class numbers
        data_dir = args.data_dir or checkpoint.meta.get("dataset", {}).get("root")
        if data_dir and (Path(data_dir) / "val").is_dir():
            print(f"evaluating on {data_dir}/val for the model card", flush=True)
            evaluation = Predictor(checkpoint, device=args.device).evaluate(data_dir, "val")
        else:
            print("the model's dataset is not here (--data-dir to give it): the card gets no confusion matrix",
                  file=sys.stderr)
    url = push_to_hub(checkpoint, args.repo_id, get_token(), evaluation, private=args.private)
    print(f"pushed to {url}\nuse it: python -m bees_ants predict {args.repo_id} photo.jpg")
    return 0


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    settings = settings or Settings.from_env()
    d = DEFAULTS
    p = argparse.ArgumentParser(prog="python -m bees_ants", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    root, weights_dir = f"{settings.data_root}/", settings.weights_dir
    env_weights = settings.backbone_weights if settings.backbone_weights and settings.backbone_weights.is_file() else None

    t = sub.add_parser("train", help="train a classifier on an image folder",
                       description="Train a classifier; hyperparameters not given keep the defaults shown "
                       "(or --preset's). Locations follow BEES_ANTS_DATA_ROOT, BEES_ANTS_WEIGHTS_DIR and "
                       "BEES_ANTS_BACKBONE_WEIGHTS, as in the app.")
    t.add_argument("--data-dir", help="folder with train/<class>/ and val/<class>/, or a zip or folder of "
                   f"<class>/ folders (imported into {root}) (default: the tutorial's ants/bees set, "
                   f"downloaded to {root})")
    t.add_argument("--arch", choices=ARCHS, help=f"backbone (default {DEFAULT_ARCH}"
                   + (", or the one BEES_ANTS_BACKBONE_WEIGHTS's file name says)" if env_weights else ")"))
    t.add_argument("--mode", choices=MODES, help="finetune: train all layers; "
                   "fixed: frozen feature extractor, train the head only; "
                   "progressive: fixed for --frozen-epochs, then fine-tune "
                   "(default: fixed on a CPU, where it takes seconds, finetune with a GPU)")
    t.add_argument("--backbone-weights", metavar="imagenet|none|PATH",
                   help="imagenet: torchvision's weights (downloaded once, cached); "
                   "PATH: a local state-dict file for this arch; none: random init (default: "
                   + (f"{env_weights}, from BEES_ANTS_BACKBONE_WEIGHTS)" if env_weights else
                      "BEES_ANTS_BACKBONE_WEIGHTS if it names a file, else imagenet)"))
    t.add_argument("--preset", choices=sorted(PRESETS),
                   help="tutorial: its exact recipe (batch 4, a fresh feature view per epoch); "
                   "options given with it still win")
    def finetune(name: str) -> str:
        """The help's "; finetune X" where fine-tuning's default (MODE_DEFAULTS) differs from TrainConfig's."""
        value = MODE_DEFAULTS["finetune"].get(name, getattr(d, name))
        shown = ("on" if value else "off") if isinstance(value, bool) else value
        return f"; finetune {shown}" if value != getattr(d, name) else ""

    t.add_argument("--epochs", type=int, help=f"(default {d.epochs}{finetune('epochs')})")
    t.add_argument("--optimizer", choices=OPTIMIZERS, help=f"sgd (the tutorial's) or adamw (default {d.optimizer})")
    t.add_argument("--lr", type=float, help=f"learning rate of the new head (default {d.lr}{finetune('lr')})")
    t.add_argument("--backbone-lr-scale", type=float, dest="backbone_lr_scale",
                   help=f"the pretrained layers learn at lr x this (default {d.backbone_lr_scale}"
                   f"{finetune('backbone_lr_scale')})")
    t.add_argument("--momentum", type=float, help=f"SGD momentum (default {d.momentum})")
    t.add_argument("--label-smoothing", type=float, dest="label_smoothing",
                   help=f"of the training loss (default {d.label_smoothing})")
    t.add_argument("--lr-schedule", choices=LR_SCHEDULES, dest="lr_schedule",
                   help=f"step: x gamma every step-size epochs; cosine: down to 0 over the epochs "
                   f"(default {d.lr_schedule}{finetune('lr_schedule')})")
    t.add_argument("--batch-size", type=int, dest="batch_size",
                   help=f"per process (default {d.batch_size}; the tutorial's 4 makes BatchNorm noisy)")
    t.add_argument("--step-size", type=int, dest="step_size",
                   help=f"StepLR: epochs between LR drops (default {d.step_size})")
    t.add_argument("--gamma", type=float, help=f"StepLR: LR multiplier at each drop (default {d.gamma})")
    t.add_argument("--feature-views", type=int, dest="feature_views",
                   help="fixed mode, and training the last blocks: augmented views of the train set whose "
                   f"frozen-part output is cached (default {d.feature_views})")
    t.add_argument("--frozen-epochs", type=int, dest="frozen_epochs",
                   help=f"progressive mode: head-only epochs before unfreezing (default {d.frozen_epochs})")
    t.add_argument("--train-blocks", type=int, dest="train_blocks",
                   help="finetune/progressive: train only the last N blocks and the head; the blocks before "
                   "them run once per cached view (see feature views and the memory budget) "
                   f"(default {d.train_blocks}: every block)")
    t.add_argument("--patience", type=int, help="stop after this many epochs without a better val score (the stop metric) "
                   f"(default {d.patience}: never stop early{finetune('patience')})")
    t.add_argument("--stop-metric", choices=STOP_METRICS, dest="stop_metric",
                   help="what patience and the best checkpoint watch: val_acc (ties broken by the lower val loss), "
                   f"val_loss, or both (stop only when neither improves) (default {d.stop_metric})")
    t.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, dest="freeze_bn",
                   help="BatchNorm layers that train keep their pretrained statistics (eval mode) "
                   f"(default {'on' if d.freeze_bn else 'off'}{finetune('freeze_bn')})")
    t.add_argument("--image-size", type=int, dest="image_size", metavar="PIXELS",
                   help="the side of the square the model sees: fewer pixels train quicker, at some accuracy "
                   "(default: BEES_ANTS_IMAGE_SIZE, else the architecture's own, 224)")
    t.add_argument("--memory-budget-mb", type=int, dest="memory_budget_mb",
                   help="RAM for decoded images and cached activations; a dataset larger than it streams from "
                   "disk each epoch (default: BEES_ANTS_MEMORY_BUDGET_MB, else half of the available memory)")
    t.add_argument("--resume", metavar="CHECKPOINT", help="continue the interrupted run that wrote CHECKPOINT, "
                   "with its settings, optimizer state and epoch count (other options are ignored)")
    t.add_argument("--seed", type=int, help=f"(default {d.seed})")
    t.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    t.add_argument("--out-dir", dest="out_dir", help=f"where checkpoints go (default {weights_dir}/; "
                   "BEES_ANTS_WEIGHTS_DIR sets it)")
    t.add_argument("--output", dest="checkpoint_path", help="checkpoint file path (overrides --out-dir)")
    t.add_argument("--json", action="store_true", help="also print a JSON summary line")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="classify image files (or folders of them)")
    pr.add_argument("checkpoint", help="a checkpoint file, or a Hugging Face Hub model id (user/repo or hf://user/repo)")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--grid", metavar="PNG", help="save a grid of the images titled with file name, label "
                    "and confidence")
    pr.add_argument("--explain", metavar="OUT_DIR", help="also write a Grad-CAM overlay per image, "
                    "<name>-gradcam.jpg, into OUT_DIR: where in the image the model saw its predicted class")
    pr.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="accuracy of a checkpoint on a dataset split")
    ev.add_argument("checkpoint", help="a checkpoint file, or a Hugging Face Hub model id (user/repo or hf://user/repo)")
    ev.add_argument("--data-dir", help="default: the dataset the model was trained on if it is still there, "
                    f"else the tutorial's set (downloaded to {root})")
    ev.add_argument("--split", choices=("train", "val"), default="val", help="(default %(default)s)")
    ev.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    ev.set_defaults(func=cmd_evaluate)

    ex = sub.add_parser("export", help="export a checkpoint to a torch.export program (.pt2) that needs only torch, "
                        "or to ONNX (.onnx) that needs only onnxruntime")
    ex.add_argument("checkpoint")
    ex.add_argument("--format", choices=("pt2", "onnx", "web"), default="pt2", help="(default %(default)s; onnx and "
                    "web need requirements-extras.txt; web: a folder and .zip with a page that runs the model in a browser)")
    ex.add_argument("--output", help="default: the checkpoint path with .pt2, .onnx or .web")
    ex.add_argument("--ort-dir", help="web: a folder of onnxruntime-web files to copy into the page (default "
                    "$BEES_ANTS_ORT_DIR; neither: the page fetches them from the jsdelivr CDN)")
    ex.set_defaults(func=cmd_export)

    pu = sub.add_parser("push", help="push a checkpoint to the Hugging Face Hub (safetensors, config, model card)",
                        description="Push a checkpoint to the Hugging Face Hub as model.safetensors, config.json and a "
                        "model card with its metrics, confusion matrix and curves. The token is huggingface_hub's: "
                        "HF_TOKEN, or the one `hf auth login` saved (a write token). HF_ENDPOINT picks another Hub.")
    pu.add_argument("checkpoint")
    pu.add_argument("repo_id", help="<user or organisation>/<name>; created if it does not exist")
    pu.add_argument("--private", action="store_true", help="create the repo private")
    pu.add_argument("--data-dir", help="train/val folder to evaluate on for the card (default: the model's own dataset, "
                    "if it is here)")
    pu.add_argument("--no-evaluation", action="store_true", help="push without evaluating (no confusion matrix)")
    pu.add_argument("--device", help="cuda, mps or cpu, for the evaluation (default: the best available)")
    pu.set_defaults(func=cmd_push)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:  # written for a person; anything else is a bug and keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
