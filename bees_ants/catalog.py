"""What the server offers: dataset folders, backbone weight files and trained checkpoints.

The app only uses paths from these lists (a request naming anything else is refused), so a page
or an API client cannot make the server read arbitrary files. Locations come from environment
variables, so a Space, a container or a test points them elsewhere without code changes:

  BEES_ANTS_DATA_ROOT          data root (default data/): the tutorial set is downloaded to
                               <root>/hymenoptera_data; every prepared folder in it is offered
  BEES_ANTS_DATASETS           more dataset folders, separated by os.pathsep
  BEES_ANTS_BACKBONE_WEIGHTS   a state-dict file, or a folder of them, to start training from
  BEES_ANTS_WEIGHTS_DIR        where checkpoints are written and listed (default weights/);
                               an exported program is written next to its checkpoint (.pt2)
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import Checkpoint, list_checkpoints
from .data import SPLITS, ensure_hymenoptera
from .errors import UserError
from .export import export_program
from .models import ARCHS, DEFAULT_ARCH
from .predict import Predictor

WEIGHT_SUFFIXES = (".pth", ".pt")


class CatalogError(UserError):
    """A request for something the server does not offer."""


@dataclass(frozen=True)
class Settings:
    data_root: Path = Path("data")
    dataset_dirs: tuple[Path, ...] = ()
    backbone_weights: Path | None = None
    weights_dir: Path = Path("weights")

    @classmethod
    def from_env(cls, env=os.environ) -> "Settings":
        extra = tuple(Path(p) for p in env.get("BEES_ANTS_DATASETS", "").split(os.pathsep) if p)
        weights = env.get("BEES_ANTS_BACKBONE_WEIGHTS")
        return cls(data_root=Path(env.get("BEES_ANTS_DATA_ROOT", "data")), dataset_dirs=extra,
                   backbone_weights=Path(weights) if weights else None,
                   weights_dir=Path(env.get("BEES_ANTS_WEIGHTS_DIR", "weights")))


# -- datasets ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetChoice:
    label: str
    path: str
    download_to: str | None = None  # the tutorial's set: fetched into this data root on first use

    def download(self) -> None:
        ensure_hymenoptera(self.download_to)


def is_prepared(folder: Path) -> bool:
    return all((folder / s).is_dir() for s in SPLITS)


def dataset_choices(settings: Settings) -> list[DatasetChoice]:
    """The tutorial's ants/bees set first, then prepared folders in the data root, then extras."""
    tutorial = settings.data_root / "hymenoptera_data"
    found = [tutorial]
    if settings.data_root.is_dir():
        found += sorted(p for p in settings.data_root.iterdir() if p.is_dir() and is_prepared(p))
    found += [p for p in settings.dataset_dirs if is_prepared(p)]
    by_path: dict[Path, Path] = {}
    for p in found:
        by_path.setdefault(p.resolve(), p)  # the same folder reached twice: keep its first place
    unique = list(by_path.values())
    choices = []
    if not is_prepared(tutorial):
        unique.remove(tutorial)
        choices.append(DatasetChoice("ants/bees (the tutorial's data, downloaded on first use)",
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


def find_dataset(settings: Settings, path: str) -> DatasetChoice:
    for choice in dataset_choices(settings):
        if choice.path == path:
            return choice
    raise CatalogError(f"'{path}' is not one of the datasets this server offers")


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


def arch_of_file(path: Path) -> str | None:
    # torchvision names its files "<arch>-<hash>.pth"; the longest match tells mobilenet_v2 from
    # mobilenet_v3_large.
    matches = [a for a in ARCHS if path.name.startswith(a)]
    return max(matches, key=len) if matches else None


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
    raise CatalogError(f"'{value}' is not one of the backbone weights this server offers")


# -- checkpoints ---------------------------------------------------------------------------------

def checkpoint_label(ckpt: Checkpoint) -> str:
    meta = ckpt.meta
    parts = [meta["arch"], meta["mode"]]
    if "best" in meta:
        parts.append(f"val {meta['best']['val_acc']:.1%}")
    if "created" in meta:
        parts.append(meta["created"][:16].replace("T", " "))
    status = meta.get("status", "completed")
    # "running": still training, or a run that crashed and left its best-so-far weights
    suffix = {"completed": "", "running": " (unfinished run)"}.get(status, f" ({status})")
    return " · ".join(parts) + suffix


def checkpoint_choices(settings: Settings) -> list[tuple[str, str]]:
    """(label, path) of every readable checkpoint in the weights folder, newest first."""
    return [(checkpoint_label(c), c.path) for c in list_checkpoints(settings.weights_dir)]


def check_checkpoint(settings: Settings, path: str) -> str:
    """`path` if it is a checkpoint file in the weights folder; refuse anything else."""
    p = Path(path or "")
    if not path or p.suffix != ".pt" or p.resolve().parent != settings.weights_dir.resolve():
        raise CatalogError("choose a model from the list")
    if not p.is_file():
        raise CatalogError(f"the model file {p.name} is gone; refresh the list")
    return str(p)


def exported_program(settings: Settings, path: str) -> str:
    """The checkpoint's torch.export program (<checkpoint>.pt2, next to it), exported unless an
    up-to-date one is already there. `path` must be one of the offered checkpoints."""
    checkpoint = check_checkpoint(settings, path)
    program = Path(checkpoint).with_suffix(".pt2")
    if not program.is_file() or program.stat().st_mtime < os.path.getmtime(checkpoint):
        export_program(checkpoint, program)
    return str(program)


def load_predictor(path: str) -> Predictor:
    """A Predictor per checkpoint, loaded once. Keyed by modification time too, so a checkpoint
    rewritten by a later save is reloaded instead of served stale."""
    return _predictor(path, os.path.getmtime(path))


@functools.lru_cache(maxsize=2)  # two models in memory at most; the picker rarely flips more
def _predictor(path: str, mtime: float) -> Predictor:
    return Predictor(path)
