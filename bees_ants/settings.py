"""Every setting the app and the CLI read from the environment, in one place.

Light on purpose (no torch), so `python -m bees_ants --help` and the app's startup read it for
free. Settings come from environment variables, so a Space, a container or a test points them
elsewhere without code changes. Where things live on disk (`Settings.from_env`, read once at start):

  BEES_ANTS_DATA_ROOT          data root (default data/): the tutorial set is downloaded to
                               <root>/hymenoptera_data; zips and class folders are imported into
                               it; the app offers every prepared folder in it
  BEES_ANTS_DATASETS           more dataset folders, separated by os.pathsep (app only)
  BEES_ANTS_BACKBONE_WEIGHTS   a state-dict file, or a folder of them, to start training from
                               (the CLI's --backbone-weights default when it names a file)
  BEES_ANTS_WEIGHTS_DIR        where checkpoints are written and listed (default weights/);
                               exports are written next to their checkpoint (.pt2, .onnx);
                               the app keeps its job records and its browser key in it too
  BEES_ANTS_IMAGE_SIZE         the input size new runs train at, in pixels (the CLI's --image-size
                               default): 160 or 112 make training and prediction quicker on a CPU
                               Space, at some accuracy (default, or 0: the architecture's own, 224)
  BEES_ANTS_MAX_RUNNING        training jobs the app runs at once (default 1); more wait in a queue
  BEES_ANTS_MAX_QUEUED         jobs that may wait (default 10); beyond that Train is refused
  BEES_ANTS_MAX_RUN_SECONDS    longest a run may train (default 1200, 20 minutes; 0: no cap); it
                               then stops as a cancel does, keeping its best checkpoint. On
                               ZeroGPU a run's GPU time (BEES_ANTS_GPU_SECONDS) is shorter still
  BEES_ANTS_MAX_PER_ADDRESS    jobs an anonymous visitor's network address may have queued or
                               running at once (default 2; 0: no limit)
  BEES_ANTS_SIGNED_IN_PLACES   queue places kept for visitors signed in with Hugging Face
                               (default: a third of the queue when the Space offers sign-in)

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
  BEES_ANTS_UPLOAD_MINUTES     minutes an upload (and Gradio's own copy of a shown file) stays in
                               Gradio's cache folder (default 360)
  BEES_ANTS_SWEEP_MINUTES      how often leftovers, expired visitors and old temp files are swept
                               (default 10)

Read when used (the functions below), so a test or an operator can change them in a running process:

  BEES_ANTS_MEMORY_BUDGET_MB   RAM a training run may fill with decoded images and cached
                               activations (default: half of what is available at its start)
  BEES_ANTS_GPU_SECONDS        on ZeroGPU, the most GPU seconds one run asks for (zerogpu.py)
  BEES_ANTS_ORT_DIR            onnxruntime-web's dist folder (npm): the live view and web exports
                               use these files instead of the pinned CDN's (webpage.py)
  SPACES_ZERO_GPU              set by Hugging Face on a ZeroGPU Space
  SPACE_ID                     set by Hugging Face on every Space: requests come through its proxy
  OAUTH_CLIENT_ID              set by Hugging Face on a Space with `hf_oauth: true`: visitors can sign in

Not ours, and read where they are used: torchrun's LOCAL_RANK and WORLD_SIZE (device.py), and
Gradio's own GRADIO_* variables (app.py, ui/__init__.py).
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_ROOT = Path("data")
DEFAULT_WEIGHTS_DIR = Path("weights")
# The input sizes a run may train at (TrainConfig.image_size, BEES_ANTS_IMAGE_SIZE): every backbone
# halves its input five times before its last features, so below 32 pixels nothing is left.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024


@dataclass(frozen=True)
class Settings:
    data_root: Path = DEFAULT_DATA_ROOT
    dataset_dirs: tuple[Path, ...] = ()
    backbone_weights: Path | None = None
    weights_dir: Path = DEFAULT_WEIGHTS_DIR
    image_size: int | None = None
    max_running: int = 1
    max_queued: int = 10
    max_run_seconds: int = 20 * 60  # a fine-tune of the tutorial's set takes minutes on a CPU
    max_per_address: int = 2
    signed_in_places: int = 0
    max_datasets: int = 10
    max_models: int = 20
    visitor_mb: int = 2048
    space_mb: int = 20480
    idle_days: float = 7
    signed_in_idle_days: float = 90
    keep_downloads: int = 3
    temp_minutes: float = 60
    upload_minutes: float = 6 * 60  # long enough to come back to a page's uploads; a zip is imported at once
    sweep_minutes: float = 10

    @property
    def jobs_dir(self) -> Path:
        """The app's job records, so a restart can tell visitors what happened to their runs."""
        return self.weights_dir / ".jobs"

    def browser_secret(self) -> str:
        """The key gr.BrowserState scrambles each browser's visitor id with in its localStorage.
        Gradio sends it to every page (in /config), so it hides the id from nobody: the id is a
        random bearer secret that only its browser holds (README: Spaces). Kept in the weights
        folder so that stored ids stay readable, and visitors keep their models, across restarts."""
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
        max_queued = _number(env, "BEES_ANTS_MAX_QUEUED", 10)
        signed_in_places = max_queued // 3 if sign_in_offered(env) else 0
        return cls(data_root=Path(env.get("BEES_ANTS_DATA_ROOT") or DEFAULT_DATA_ROOT), dataset_dirs=extra,
                   backbone_weights=Path(weights) if weights else None,
                   weights_dir=Path(env.get("BEES_ANTS_WEIGHTS_DIR") or DEFAULT_WEIGHTS_DIR),
                   image_size=_image_size(env),
                   max_running=_number(env, "BEES_ANTS_MAX_RUNNING", 1),
                   max_queued=max_queued,
                   max_datasets=_number(env, "BEES_ANTS_MAX_DATASETS", 10),
                   max_models=_number(env, "BEES_ANTS_MAX_MODELS", 20),
                   visitor_mb=_number(env, "BEES_ANTS_VISITOR_MB", 2048),
                   space_mb=_number(env, "BEES_ANTS_SPACE_MB", 20480),
                   idle_days=_number(env, "BEES_ANTS_IDLE_DAYS", 7.0),
                   signed_in_idle_days=_number(env, "BEES_ANTS_SIGNED_IN_IDLE_DAYS", 90.0),
                   keep_downloads=_number(env, "BEES_ANTS_KEEP_DOWNLOADS", 3),
                   temp_minutes=_number(env, "BEES_ANTS_TEMP_MINUTES", 60.0),
                   upload_minutes=_number(env, "BEES_ANTS_UPLOAD_MINUTES", 360.0),
                   sweep_minutes=_number(env, "BEES_ANTS_SWEEP_MINUTES", 10.0),
                   max_run_seconds=_number(env, "BEES_ANTS_MAX_RUN_SECONDS", 20 * 60),
                   max_per_address=_number(env, "BEES_ANTS_MAX_PER_ADDRESS", 2),
                   signed_in_places=_number(env, "BEES_ANTS_SIGNED_IN_PLACES", signed_in_places))


def _number(env, name: str, default: float) -> float:
    """A number setting; unset or empty means the default, so an explicit 0 keeps its meaning."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return type(default)(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number") from None


def _image_size(env) -> int | None:
    """BEES_ANTS_IMAGE_SIZE, checked at start: a bad value stops the app and the CLI with its name,
    rather than refusing every visitor's run later with a message only the operator can act on."""
    size = _number(env, "BEES_ANTS_IMAGE_SIZE", 0) or None
    if size is not None and not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise ValueError(f"BEES_ANTS_IMAGE_SIZE={size} is not between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} "
                         "pixels (leave it unset for the architecture's own size)")
    return size


def memory_budget_mb(env=os.environ) -> int | None:
    return int(env.get("BEES_ANTS_MEMORY_BUDGET_MB") or 0) or None


def gpu_seconds(env=os.environ) -> int | None:
    return int(env.get("BEES_ANTS_GPU_SECONDS") or 0) or None


ORT_DIR_ENV = "BEES_ANTS_ORT_DIR"


def onnxruntime_web_dir(env=os.environ) -> str | None:
    return env.get(ORT_DIR_ENV) or None


def zero_gpu_space(env=os.environ) -> bool:
    return env.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def on_space(env=os.environ) -> bool:
    return bool(env.get("SPACE_ID"))


def sign_in_offered(env=os.environ) -> bool:
    return bool(env.get("OAUTH_CLIENT_ID"))
