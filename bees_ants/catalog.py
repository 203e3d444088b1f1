"""What the server offers each visitor: dataset folders, backbone weight files and checkpoints.

This is the one place that decides who may see or use what. Shared: the tutorial's set, prepared
folders in the data root and BEES_ANTS_DATASETS, backbone weight files, and checkpoints at the top
of the weights folder (put there by the operator, e.g. with the CLI). Private: what a visitor
uploaded or built (<data root>/visitors/<key>/) and trained (<weights dir>/visitors/<key>/) -- listed,
shown, predicted with, evaluated, downloaded and exported for that visitor only. The app only
uses paths from these lists: a request naming anything else, including another visitor's file,
gets the same refusal as a name that does not exist, so a page or an API client can neither read
arbitrary files nor learn what others have. A visitor may delete their own datasets and models, and
nothing else. Each new dataset or run must fit the visitor's budget (housekeeping.require_room),
and every request that lists or uses a visitor's things counts as a visit (housekeeping.touch),
which keeps them from expiring. Locations and budgets: settings.py (BEES_ANTS_* variables).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import Checkpoint, Listed, checkpoint_meta, list_checkpoint_meta, side_file
from .data import SPLITS, DatasetDownloadError, ensure_hymenoptera
from .draft import Draft
from .errors import UserError
from .export import export_apart
from .housekeeping import remove_folder, require_room, touch
from .webpage import export_web
from .config import DEFAULT_ARCH, arch_of_file
from .predict import Predictor
from .settings import Settings
from .resume import resume_path
from .visitors import PRIVATE_FOLDER, Visitor

WEIGHT_SUFFIXES = (".pth", ".pt")


class CatalogError(UserError):
    """A request for something the server does not offer."""


# -- datasets ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetChoice:
    label: str
    path: str
    download_to: str | None = None  # the tutorial's set: fetched into this data root on first use

    def download(self) -> None:
        try:
            ensure_hymenoptera(self.download_to)
        except DatasetDownloadError:
            _DOWNLOAD_FAILED.add(self.download_to)
            raise


# Data roots whose tutorial download failed in this process (offline, most likely): the list stops
# offering a dead end. Remembered, not probed: a failed download is the one cheap, sure sign, and
# a restart tries again.
_DOWNLOAD_FAILED: set[str] = set()


def is_prepared(folder: Path) -> bool:
    return all((folder / s).is_dir() for s in SPLITS)


def prepared_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    # Hidden: the app's work in progress (an import, a folder being removed), never a dataset.
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_prepared(p))


def dataset_choices(settings: Settings, visitor: Visitor | None) -> list[DatasetChoice]:
    """The tutorial's ants/bees set first, then the visitor's own uploads (none before we know
    who it is), then the shared prepared folders in the data root, then extras."""
    tutorial = settings.data_root / "hymenoptera_data"
    if visitor:
        touch(settings, visitor)
    own = prepared_folders(visitor.folder(settings.data_root)) if visitor and not visitor.anonymous else []
    # The data root's visitors/ folder holds everyone's own folders: never a dataset itself (in a
    # visitor's own folder, a dataset may be called "visitors").
    shared = [p for p in prepared_folders(settings.data_root) if p.name != PRIVATE_FOLDER]
    found = [tutorial, *own, *shared]
    found += [p for p in settings.dataset_dirs if is_prepared(p)]
    by_path: dict[Path, Path] = {}
    for p in found:
        by_path.setdefault(p.resolve(), p)  # the same folder reached twice: keep its first place
    unique = list(by_path.values())
    choices = []
    if not is_prepared(tutorial):
        unique.remove(tutorial)
        if str(settings.data_root) not in _DOWNLOAD_FAILED or not unique:  # never an empty list
            choices.append(DatasetChoice("ants/bees (the tutorial's data, downloaded on first use: needs internet)",
                                         str(tutorial), str(settings.data_root)))
    names = [p.name for p in unique]
    for p in unique:
        label = f"{p.name} · {_class_list(p)}"
        if names.count(p.name) > 1:  # same folder name in two places: say where
            label += f" ({p.parent})"
        choices.append(DatasetChoice(label, str(p)))
    return choices


def _class_list(folder: Path, shown: int = 4) -> str:
    classes = sorted(d.name for d in (folder / "train").iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) <= shown:
        return ", ".join(classes)
    return ", ".join(classes[:shown]) + f", … ({len(classes)} classes)"


def default_dataset(choices: list[DatasetChoice]) -> DatasetChoice:
    """The first folder that is already on disk; the tutorial download only if there is none."""
    return next((c for c in choices if c.download_to is None), choices[0])


def opening_dataset(settings: Settings, visitor: Visitor | None, choices: list[DatasetChoice],
                    last_used: str | None = None) -> DatasetChoice:
    """The dataset a page selects for `visitor`: the one their latest run used (`last_used`), else
    the newest of their own (created or imported last), else the default."""
    chosen = next((c for c in choices if c.path == last_used), None)
    if chosen is None and visitor is not None and not visitor.anonymous:
        own = visitor.folder(settings.data_root)
        chosen = max((c for c in choices if Path(c.path).parent == own), key=_made_at, default=None)
    return chosen or default_dataset(choices)


def _made_at(choice: DatasetChoice) -> float:
    # A dataset is built whole in a work folder and renamed into place (importer.publish), and
    # nothing is added to its top folder later: that folder's modification time is when it was made.
    try:
        return Path(choice.path).stat().st_mtime
    except OSError:  # deleted meanwhile
        return 0.0


# The same words for a dataset that is not there and one that is someone else's.
DATASET_REFUSAL = ("choose a dataset from the list. To train on another folder, upload it as a .zip under "
                   "\"Add your own dataset (.zip)\", or restart the app with BEES_ANTS_DATASETS=/path/to/folder "
                   "(a folder with train/<class>/ and val/<class>/)")


def find_dataset(settings: Settings, visitor: Visitor, path: str) -> DatasetChoice:
    for choice in dataset_choices(settings, visitor):
        if choice.path == path:
            return choice
    raise CatalogError(DATASET_REFUSAL)


def check_choice(value, allowed, what: str) -> str:
    """`value` if it is one of `allowed`; otherwise the usual refusal, without echoing it back."""
    if not isinstance(value, str) or value not in allowed:
        raise CatalogError(f"choose a {what} from the list")
    return value


def upload_folder(settings: Settings, visitor: Visitor) -> Path:
    """Where the visitor's uploaded datasets go."""
    return visitor.folder(settings.data_root)


def room_for_dataset(settings: Settings, visitor: Visitor, incoming_bytes: int = 0) -> Path:
    """`upload_folder`, when the visitor may add a dataset of about `incoming_bytes`; otherwise a
    refusal saying what to delete (housekeeping.require_room)."""
    folder = upload_folder(settings, visitor)
    require_room(settings, visitor, "dataset", len(prepared_folders(folder)), incoming_bytes)
    return folder


def delete_dataset(settings: Settings, visitor: Visitor, path, in_use: tuple[str, ...] = ()) -> str:
    """Remove one of the visitor's own datasets (not a shared one, not one `in_use` by their run);
    returns its name. Models trained on it stay; they only lose their val images."""
    own = {str(p): p for p in prepared_folders(upload_folder(settings, visitor))}
    if not isinstance(path, str) or path not in own:
        raise CatalogError("choose one of your own datasets (an upload or one you built); shared ones stay")
    if path in in_use:
        raise CatalogError("your training run is using this dataset; cancel it or wait for it to end first")
    remove_folder(own[path])
    return own[path].name


def draft(settings: Settings, visitor: Visitor) -> Draft:
    """The visitor's dataset in the making (draft.py). It lives in their own data folder, so only
    they see or change it, and the dataset it becomes is theirs too (`upload_folder`)."""
    touch(settings, visitor)
    return Draft(upload_folder(settings, visitor) / ".draft")


# -- backbone weights ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BackboneChoice:
    label: str
    value: str  # "imagenet", "none" or a file path
    arch: str | None = None  # for a file: the architecture its name starts with, if any

    @property
    def weights(self) -> str | None:
        """The TrainConfig.backbone_weights value."""
        return None if self.value == "none" else self.value


def backbone_choices(settings: Settings) -> list[BackboneChoice]:
    """Local state-dict files first (so the default works offline), then ImageNet, then none."""
    source = settings.backbone_weights
    if source is None or not source.exists():
        files = []
    elif source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    else:
        files = [source]
    local = [BackboneChoice(f"{p.name} (local file)", str(p), arch_of_file(p)) for p in files]
    return local + [BackboneChoice("ImageNet (download from torchvision)", "imagenet"),
                    BackboneChoice("none (random init)", "none")]


def backbone_for_arch(choices: list[BackboneChoice], arch: str) -> BackboneChoice:
    """The default starting point for `arch`: a local file made for it, else ImageNet."""
    return next((c for c in choices if c.arch == arch), next(c for c in choices if c.value == "imagenet"))


def default_arch(choices: list[BackboneChoice]) -> str:
    """The tutorial's resnet18, unless a local weights file says which backbone can start offline."""
    return next((c.arch for c in choices if c.arch), DEFAULT_ARCH)


def find_backbone(settings: Settings, value: str) -> BackboneChoice:
    for choice in backbone_choices(settings):
        if choice.value == value:
            return choice
    raise CatalogError("choose starting weights from the list")


# -- checkpoints ---------------------------------------------------------------------------------

def checkpoint_label(ckpt: Checkpoint | Listed) -> str:
    """What the pickers show: enough to tell two runs apart (their dataset, and the second they
    were made: two runs of one recipe on one set differ in nothing else)."""
    meta = ckpt.meta
    parts = [meta["arch"], meta["mode"]]
    if "best" in meta:
        parts.append(f"val {meta['best']['val_acc']:.1%}")
    if meta.get("dataset", {}).get("root"):
        parts.append(Path(meta["dataset"]["root"]).name)
    if "created" in meta:
        parts.append(meta["created"][:19].replace("T", " "))
    status = meta.get("status", "completed")
    # "running": still training, or a run that crashed and left its best-so-far weights
    suffix = {"completed": "", "running": " (unfinished run)"}.get(status, f" ({status})")
    return " · ".join(parts) + suffix


def checkpoint_folder(settings: Settings, visitor: Visitor) -> Path:
    """Where the visitor's trained checkpoints go."""
    return visitor.folder(settings.weights_dir)


def room_for_model(settings: Settings, visitor: Visitor) -> Path:
    """`checkpoint_folder`, when the visitor may train another model; otherwise a refusal saying
    what to delete (housekeeping.require_room)."""
    folder = checkpoint_folder(settings, visitor)
    require_room(settings, visitor, "model", len(list(folder.glob("*.pt"))))
    return folder


def delete_checkpoint(settings: Settings, visitor: Visitor, path, in_use: tuple[str, ...] = ()) -> str:
    """Remove one of the visitor's own checkpoints (not a shared one, not one `in_use` by their
    run) with its side file, resume state and exports; returns its name."""
    refusal = CatalogError("choose one of your own models; shared ones stay")
    try:
        checked = Path(check_checkpoint(settings, visitor, path))
    except CatalogError:
        raise refusal from None
    if checked.resolve().parent != checkpoint_folder(settings, visitor).resolve():
        raise refusal
    if str(checked) in in_use:
        raise CatalogError("your training run is writing this model; cancel it or wait for it to end first")
    for p in (checked, side_file(checked), resume_path(checked), checked.with_suffix(".pt2"), checked.with_suffix(".onnx"),
              checked.with_suffix(".web.zip")):
        p.unlink(missing_ok=True)
    remove_folder(checked.with_suffix(".web"))  # the exported web page
    return checked.name


def checkpoint_choices(settings: Settings, visitor: Visitor) -> list[tuple[str, str]]:
    """(label, path) of every readable checkpoint the visitor may use -- their own and the shared
    ones -- newest first."""
    # Metadata only (side files, cached): a listing costs the same after 200 trainings as after one.
    touch(settings, visitor)
    own = [] if visitor.anonymous else list_checkpoint_meta(checkpoint_folder(settings, visitor))
    found = own + list_checkpoint_meta(settings.weights_dir)
    found.sort(key=lambda c: c.mtime, reverse=True)
    return [(checkpoint_label(c), c.path) for c in found]


def check_checkpoint(settings: Settings, visitor: Visitor, path) -> str:
    """`path` if it is a checkpoint file the visitor may use; refuse anything else with the same
    words, whether it belongs to someone else, does not exist or is not a path at all."""
    refusal = CatalogError("choose a model from the list")
    touch(settings, visitor)
    if not isinstance(path, str) or not path or len(path) > 1024 or "\0" in path:
        raise refusal
    p = Path(path)
    folders = [settings.weights_dir.resolve()]
    if not visitor.anonymous:
        folders.append(checkpoint_folder(settings, visitor).resolve())
    if p.suffix != ".pt" or p.resolve().parent not in folders:
        raise refusal
    if not p.is_file():
        raise CatalogError(f"the model file {p.name} is gone; refresh the list")
    return str(p)


def named_checkpoint(settings: Settings, visitor: Visitor, name: str) -> str:
    """The visitor's checkpoint with file name `name`; empty: the newest one. For API clients
    (agents) that know a model by name, not by its path on this server."""
    choices = [path for _, path in checkpoint_choices(settings, visitor)]
    if not choices:
        raise CatalogError("this server has no trained model yet: train one in the app's Train tab first")
    found = next((p for p in choices if Path(p).name == name), None) if name else choices[0]
    if found is None:
        raise CatalogError(f"no model named '{str(name)[:100]}'; the models here: "
                           + ", ".join(Path(p).name for p in choices[:20]))
    return check_checkpoint(settings, visitor, found)


def checkpoint_metas(settings: Settings, visitor: Visitor, paths: list) -> list[dict]:
    """The metadata of each of `paths`, from its side file (cached; no weights are loaded), each
    path refused as `check_checkpoint` refuses it."""
    metas = []
    for path in paths:
        p = Path(check_checkpoint(settings, visitor, path))
        try:
            meta = checkpoint_meta(p, p.stat())
        except OSError:  # removed since the check
            meta = None
        if meta is None:
            raise CatalogError(f"the model file {p.name} is gone or unreadable; refresh the list")
        metas.append(meta)
    return metas


def resumable_checkpoint(settings: Settings, visitor: Visitor, path) -> str:
    """`path` if it is one of the visitor's own checkpoints whose run stopped before its end and
    left a resume state; a shared or another visitor's checkpoint gets the same refusal as none."""
    refusal = CatalogError("choose one of your own interrupted or cancelled runs")
    try:
        checked = check_checkpoint(settings, visitor, path)
    except CatalogError:
        raise refusal from None
    if Path(checked).resolve().parent != checkpoint_folder(settings, visitor).resolve():
        raise refusal
    if not resume_path(checked).is_file():
        raise CatalogError("that run has nothing to resume: it completed, or stopped before its first epoch ended")
    return checked


def exported_program(settings: Settings, visitor: Visitor, path: str) -> str:
    """The checkpoint's torch.export program (<checkpoint>.pt2, next to it), exported unless an
    up-to-date one is already there. `path` must be one of the visitor's checkpoints. Exported in
    a process of its own (export.export_apart): the app trains in other threads meanwhile."""
    return _exported(check_checkpoint(settings, visitor, path), ".pt2", functools.partial(export_apart, "pt2"))


def exported_onnx(settings: Settings, visitor: Visitor, path: str) -> str:
    """The same for its ONNX model (<checkpoint>.onnx)."""
    return _exported(check_checkpoint(settings, visitor, path), ".onnx", functools.partial(export_apart, "onnx"))


def exported_web_page(settings: Settings, visitor: Visitor, path: str) -> str:
    """The same as a web page (<checkpoint>.web.zip, with its folder <checkpoint>.web), made from
    its up-to-date ONNX model."""
    checkpoint = check_checkpoint(settings, visitor, path)
    onnx = exported_onnx(settings, visitor, checkpoint)
    return _exported(checkpoint, ".web.zip",
                     lambda ckpt, target: export_web(ckpt, Path(ckpt).with_suffix(".web"), onnx_path=onnx))


def _exported(checkpoint: str, suffix: str, export) -> str:
    target = Path(checkpoint).with_suffix(suffix)
    if not target.is_file() or target.stat().st_mtime < os.path.getmtime(checkpoint):
        export(checkpoint, target)
    return str(target)


def load_predictor(path: str) -> Predictor:
    """A Predictor per checkpoint, loaded once. Keyed by modification time too, so a checkpoint
    rewritten by a later save is reloaded instead of served stale."""
    return _predictor(path, os.path.getmtime(path))


@functools.lru_cache(maxsize=2)  # two models in memory at most; the picker rarely flips more
def _predictor(path: str, mtime: float) -> Predictor:
    # On ZeroGPU this is the app process, where CUDA only seems available: pick_device says CPU there.
    return Predictor(path)
