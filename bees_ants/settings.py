"""Where things live on disk: the one place for the locations the app and the CLI share.

Light on purpose (no torch), so `python -m bees_ants --help` and the app's startup read it for
free. Locations come from environment variables, so a Space, a container or a test points them
elsewhere without code changes:

  BEES_ANTS_DATA_ROOT          data root (default data/): the tutorial set is downloaded to
                               <root>/hymenoptera_data; zips and class folders are imported into
                               it; the app offers every prepared folder in it
  BEES_ANTS_DATASETS           more dataset folders, separated by os.pathsep (app only)
  BEES_ANTS_BACKBONE_WEIGHTS   a state-dict file, or a folder of them, to start training from
                               (the CLI's --backbone-weights default when it names a file)
  BEES_ANTS_WEIGHTS_DIR        where checkpoints are written and listed (default weights/);
                               exports are written next to their checkpoint (.pt2, .onnx);
                               the app keeps its job records and its browser key in it too
  BEES_ANTS_MAX_RUNNING        training jobs the app runs at once (default 1); more wait in a queue
  BEES_ANTS_MAX_QUEUED         jobs that may wait (default 10); beyond that Train is refused
  BEES_ANTS_MEMORY_BUDGET_MB   RAM a training run may fill with decoded images and cached
                               activations (default: half of what is available at its start)
Budgets and lifetimes of what visitors leave on disk (housekeeping.py says how they are enforced):
  BEES_ANTS_MAX_DATASETS       datasets one visitor may keep (default 10)
  BEES_ANTS_MAX_MODELS         models one visitor may keep (default 20)
  BEES_ANTS_VISITOR_MB         disk one visitor's datasets, draft and models may fill (default 2048)
  BEES_ANTS_SPACE_MB           disk all visitors' things may fill together (default 20480)
  BEES_ANTS_IDLE_DAYS          an anonymous visitor's things are removed after this many days
                               without a visit (default 7)
  BEES_ANTS_SIGNED_IN_IDLE_DAYS  the same for a signed-in visitor (default 90; 0: never)
  BEES_ANTS_KEEP_DOWNLOADS     downloads (checkpoint, exports) kept per visitor (default 3)
  BEES_ANTS_TEMP_MINUTES       minutes a download or a shown image stays on the server (default 60)
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_ROOT = Path("data")
DEFAULT_WEIGHTS_DIR = Path("weights")


@dataclass(frozen=True)
class Settings:
    data_root: Path = DEFAULT_DATA_ROOT
    dataset_dirs: tuple[Path, ...] = ()
    backbone_weights: Path | None = None
    weights_dir: Path = DEFAULT_WEIGHTS_DIR
    max_running: int = 1
    max_queued: int = 10
    max_datasets: int = 10
    max_models: int = 20
    visitor_mb: int = 2048
    space_mb: int = 20480
    idle_days: float = 7
    signed_in_idle_days: float = 90
    keep_downloads: int = 3
    temp_minutes: float = 60

    @property
    def jobs_dir(self) -> Path:
        """The app's job records, so a restart can tell visitors what happened to their runs."""
        return self.weights_dir / ".jobs"

    def browser_secret(self) -> str:
        """The key that encrypts each browser's visitor id in its localStorage. Kept in the
        weights folder, so visitors keep their id (and their models) across restarts."""
        path = self.weights_dir / ".browser-secret"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(secrets.token_urlsafe(32))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        return path.read_text().strip()

    @classmethod
    def from_env(cls, env=os.environ) -> "Settings":
        extra = tuple(Path(p) for p in env.get("BEES_ANTS_DATASETS", "").split(os.pathsep) if p)
        weights = env.get("BEES_ANTS_BACKBONE_WEIGHTS")
        return cls(data_root=Path(env.get("BEES_ANTS_DATA_ROOT") or DEFAULT_DATA_ROOT), dataset_dirs=extra,
                   backbone_weights=Path(weights) if weights else None,
                   weights_dir=Path(env.get("BEES_ANTS_WEIGHTS_DIR") or DEFAULT_WEIGHTS_DIR),
                   max_running=int(env.get("BEES_ANTS_MAX_RUNNING") or 1),
                   max_queued=int(env.get("BEES_ANTS_MAX_QUEUED") or 10),
                   max_datasets=int(env.get("BEES_ANTS_MAX_DATASETS") or 10),
                   max_models=int(env.get("BEES_ANTS_MAX_MODELS") or 20),
                   visitor_mb=int(env.get("BEES_ANTS_VISITOR_MB") or 2048),
                   space_mb=int(env.get("BEES_ANTS_SPACE_MB") or 20480),
                   idle_days=float(env.get("BEES_ANTS_IDLE_DAYS") or 7),
                   signed_in_idle_days=float(env.get("BEES_ANTS_SIGNED_IN_IDLE_DAYS") or 90),
                   keep_downloads=int(env.get("BEES_ANTS_KEEP_DOWNLOADS") or 3),
                   temp_minutes=float(env.get("BEES_ANTS_TEMP_MINUTES") or 60))
