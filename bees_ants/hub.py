"""Share a checkpoint on the Hugging Face Hub and load one back by its id.

A pushed model is a Hub repo of four to five files:
  model.safetensors  the state dict: safetensors holds tensors only, so loading it cannot run code
  config.json        arch, class names, preprocessing, hyperparameters, best metrics, history
  README.md          the model card: YAML front matter (library, tags, metrics), metrics tables
  curves.png         loss and accuracy per epoch, from the checkpoint's history
  confusion.png      the confusion matrix of an evaluation, when one was made for the push

Loading (`load_from_hub("user/repo")`, or `python -m bees_ants predict user/repo photo.jpg`)
downloads model.safetensors and config.json into the Hub cache, validates every config field
it uses, and gives a `Checkpoint` the Predictor takes like a local one; a state dict that does
not fit the config's architecture is refused when the model is built.

huggingface_hub comes with gradio; safetensors is in requirements.txt.
Both the endpoint (HF_ENDPOINT) and the cache (HF_HOME, HF_HUB_CACHE) follow huggingface_hub's
environment variables.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

import httpx
from huggingface_hub import EvalResult, HfApi, ModelCardData, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from .checkpoint import Checkpoint, load_checkpoint
from .config import ARCHS, MODES, mode_text
from .errors import MissingExtra, UserError
from .figures import confusion_figure, curves_figure
from .predict import Evaluation
from .stats import interval_text

PREFIX = "hf://"
WEIGHTS, CONFIG, CARD, CURVES, CONFUSION = "model.safetensors", "config.json", "README.md", "curves.png", "confusion.png"
MAX_CONFIG_BYTES = 10 * 2**20  # a config is kilobytes; a bigger one is not ours
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # user/repo, as the Hub spells ids


class HubError(UserError):
    """The Hub refused, could not be reached, or holds no usable model under that id."""


def hub_id(text: str) -> str | None:
    """The repo id `text` names: "hf://user/repo", or "user/repo" when no such local file exists
    (a local path wins, so a folder called user/ still works). None: not a Hub id."""
    if text.startswith(PREFIX):
        return text[len(PREFIX):].strip("/")
    looks_like_file = text.endswith((".pt", ".pt2", ".pth", ".onnx"))  # a mistyped local path, not an id
    return text if REPO_ID.match(text) and not looks_like_file and not Path(text).exists() else None


def _safetensors():
    try:
        import safetensors
        import safetensors.torch
    except ImportError:
        raise MissingExtra("Reading and writing Hub models", "safetensors") from None
    return safetensors


def _hub_call(what: str, call):
    """`call()`, with the Hub's refusals and network failures turned into a message to act on."""
    try:
        return call()
    except HFValidationError as e:
        raise HubError(f"{what}: not a valid repo id ({str(e).splitlines()[0]})") from None
    except EntryNotFoundError:
        raise HubError(f"{what}: the repo has no {WEIGHTS} and {CONFIG}; is it a bees_ants model?") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        hint = {401: "the token is missing or invalid (a write token from huggingface.co/settings/tokens)",
                403: "the token may not write there (a read-only token, or another user's namespace)",
                404: "no such model, or it is private (pass a token that may read it)"}.get(status, "")
        raise HubError(f"{what}: the Hub answered {status or 'an error'}" + (f": {hint}" if hint else
                                                                             f" ({str(e).splitlines()[0]})")) from None
    except (httpx.HTTPError, OSError) as e:  # offline, DNS, refused connection, full disk
        raise HubError(f"{what}: could not reach the Hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                       ) from None


# -- push -----------------------------------------------------------------------------------------

def hub_config(meta: dict) -> dict:
    """What config.json holds: the checkpoint's metadata without this server's paths."""
    hyper = dict(meta.get("hyperparameters", {}))
    if hyper.get("backbone_weights") not in (None, "imagenet"):
        hyper["backbone_weights"] = Path(hyper["backbone_weights"]).name  # a file on this server
    dataset = meta.get("dataset", {})
    return {"library": "bees_ants", "format": meta.get("format", "bees_ants/1"),
            "arch": meta["arch"], "class_names": meta["class_names"], "mode": meta["mode"],
            "preprocessing": meta["preprocessing"], "hyperparameters": hyper, "best": meta.get("best"),
            "history": meta.get("history", []),
            "dataset": {"name": Path(dataset["root"]).name if dataset.get("root") else None,
                        "counts": dataset.get("counts")},
            "versions": meta.get("versions"), "created": meta.get("created")}


def model_card(repo_id: str, config: dict, evaluation: Evaluation | None) -> str:
    best, hyper = config.get("best") or {}, config["hyperparameters"]
    dataset_name = config["dataset"]["name"] or "image folder"
    results = []
    if best:
        results.append(EvalResult(task_type="image-classification", dataset_type="imagefolder",
                                  dataset_name=dataset_name, dataset_split="val", metric_type="accuracy",
                                  metric_value=round(best["val_acc"], 4), metric_name="best val accuracy"))
    data = ModelCardData(library_name="bees_ants", pipeline_tag="image-classification", model_name=repo_id,
                         tags=["image-classification", "transfer-learning", "pytorch", "torchvision", config["arch"]],
                         metrics=["accuracy"], eval_results=results or None)
    classes = ", ".join(f"`{c}`" for c in config["class_names"])
    lines = [f"---\n{data.to_yaml()}\n---", f"# {repo_id.split('/')[-1]}",
             f"An ImageNet **{config['arch']}** trained with bees_ants "
             f"({mode_text(config['mode'], hyper.get('frozen_epochs', '?'))}) to tell apart {classes}.",
             "## Metrics", "| metric | value |", "|---|---|"]
    if best:
        n_val = sum(((config["dataset"]["counts"] or {}).get("val") or {}).values())
        lines += [f"| best val accuracy | {best['val_acc']:.4f} (epoch {best['epoch']}"
                  + (f"; {interval_text(best['val_acc'], n_val)}" if n_val else "") + ") |",
                  f"| val loss at that epoch | {best['val_loss']:.4f} |"]
    if evaluation:
        lines += [f"| {evaluation.split} accuracy, re-evaluated for this card | {evaluation.accuracy:.4f} "
                  f"({interval_text(evaluation.accuracy, len(evaluation.true))}) |", f"| {evaluation.split} loss | {evaluation.loss:.4f} |",
                  "", "| class | images | precision | recall |", "|---|---|---|---|"]
        lines += [f"| {name} | {m['images']} | {m['precision']:.3f} | {m['recall']:.3f} |"
                  for name, m in evaluation.per_class().items()]
        lines += ["", f"![confusion matrix]({CONFUSION})"]
    lines += ["## Training curves", f"![loss and accuracy per epoch]({CURVES})", "## Training", "| setting | value |",
              "|---|---|"] + [f"| {k} | {v} |" for k, v in hyper.items()]
    counts = config["dataset"]["counts"] or {}
    if counts:
        lines.append(f"\nData: `{dataset_name}`, " + ", ".join(f"{split} {sum(c.values())} images"
                                                               for split, c in counts.items()) + ".")
    crop, resize = config["preprocessing"]["crop_size"], config["preprocessing"]["resize_size"]
    lines += ["## Use", "```bash\npip install -r requirements.txt -r requirements-extras.txt   # in a bees_ants checkout\n"
              f"python -m bees_ants predict {repo_id} photo.jpg\n```",
              f"Without bees_ants: `{WEIGHTS}` is the torchvision `{config['arch']}` state dict with its last "
              f"Linear layer resized to {len(config['class_names'])} classes; resize the shorter side to {resize}, "
              f"center-crop {crop}, normalise with mean {config['preprocessing']['mean']} and std "
              f"{config['preprocessing']['std']}; `{CONFIG}` holds the rest."]
    return "\n\n".join(lines).replace("\n\n|", "\n|") + "\n"


def write_model_folder(checkpoint: str | os.PathLike | Checkpoint, folder: str | os.PathLike, repo_id: str,
                       evaluation: Evaluation | None = None) -> Path:
    """The files a push uploads, written into `folder`."""
    st = _safetensors()
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = hub_config(ckpt.meta)
    st.torch.save_file({k: v.contiguous() for k, v in ckpt.state_dict.items()}, folder / WEIGHTS, metadata={"format": "pt"})
    (folder / CONFIG).write_text(json.dumps(config, indent=2))
    (folder / CARD).write_text(model_card(repo_id, config, evaluation))
    curves_figure(ckpt.meta).savefig(folder / CURVES, dpi=100)
    if evaluation:
        confusion_figure(evaluation).savefig(folder / CONFUSION, dpi=100)
    return folder


def push_to_hub(checkpoint: str | os.PathLike | Checkpoint, repo_id: str, token: str | None,
                evaluation: Evaluation | None = None, private: bool = False, endpoint: str | None = None) -> str:
    """Create `repo_id` (if need be) and upload the model to it; returns the repo's URL."""
    if not token:
        raise HubError("pushing needs a Hugging Face write token (huggingface.co/settings/tokens)")
    _hub_call("push", lambda: validate_repo_id(repo_id))
    if "/" not in repo_id:
        raise HubError(f"push: give the repo id as <user or organisation>/<name>, not '{repo_id}'")
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="bees_ants-hub-") as tmp:
        write_model_folder(checkpoint, tmp, repo_id, evaluation)
        url = _hub_call("push", lambda: api.create_repo(repo_id, private=private, exist_ok=True))
        _hub_call("push", lambda: api.upload_folder(repo_id=repo_id, folder_path=tmp,
                                                    commit_message="Upload bees_ants model"))
    return str(url)


# -- load -----------------------------------------------------------------------------------------

def _number(value, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and low <= value <= high


def meta_from_config(config) -> dict:
    """The checkpoint metadata a Hub config.json describes, every field checked; only the fields
    the Predictor and the model card use are kept."""
    def bad(field: str, want: str):
        return HubError(f"{CONFIG}: '{field}' must be {want}")

    if not isinstance(config, dict):
        raise HubError(f"{CONFIG} does not hold a JSON object")
    if config.get("arch") not in ARCHS:
        raise bad("arch", f"one of {', '.join(ARCHS)}")
    names = config.get("class_names")
    if (not isinstance(names, list) or not 2 <= len(names) <= 10_000 or len(set(map(str, names))) != len(names)
            or not all(isinstance(n, str) and 0 < len(n) <= 200 for n in names)):
        raise bad("class_names", "a list of 2 to 10,000 distinct names (1 to 200 characters each)")
    if config.get("mode") not in MODES:
        raise bad("mode", f"one of {', '.join(MODES)}")
    prep = config.get("preprocessing")
    if not isinstance(prep, dict):
        raise bad("preprocessing", "an object")
    if not (_number(prep.get("resize_size"), 8, 2048) and _number(prep.get("crop_size"), 8, 2048)
            and int(prep["resize_size"]) == prep["resize_size"] and int(prep["crop_size"]) == prep["crop_size"]
            and prep["crop_size"] <= prep["resize_size"]):
        raise bad("preprocessing", "an object with whole resize_size >= crop_size, between 8 and 2048")
    for key in ("mean", "std"):
        if not (isinstance(prep.get(key), list) and len(prep[key]) == 3 and all(_number(v, 1e-6 if key == "std" else 0, 1)
                                                                              for v in prep[key])):
            raise bad(f"preprocessing.{key}", "three numbers between 0 and 1" + (" (above 0)" if key == "std" else ""))
    if prep.get("interpolation", "bilinear") not in ("bilinear", "bicubic", "nearest"):
        raise bad("preprocessing.interpolation", "bilinear, bicubic or nearest")
    meta = {"arch": config["arch"], "class_names": names, "mode": config["mode"],
            "preprocessing": {"resize_size": int(prep["resize_size"]), "crop_size": int(prep["crop_size"]),
                              "mean": prep["mean"], "std": prep["std"],
                              "interpolation": prep.get("interpolation", "bilinear")}}
    best = config.get("best")
    if isinstance(best, dict) and _number(best.get("val_acc"), 0, 1) and _number(best.get("epoch"), 1, 10**6):
        meta["best"] = {"val_acc": best["val_acc"], "epoch": int(best["epoch"]),
                        "val_loss": best["val_loss"] if _number(best.get("val_loss"), 0, math.inf) else math.nan}
    return meta


def load_from_hub(repo_id: str, token: str | None = None, revision: str | None = None,
                  endpoint: str | None = None, cache_dir: str | os.PathLike | None = None) -> Checkpoint:
    """The model pushed to `repo_id` (or "hf://repo_id"), downloaded once into the Hub cache."""
    st = _safetensors()
    repo_id = hub_id(repo_id) or repo_id

    def download(name: str) -> str:
        return _hub_call(f"load {repo_id} from the Hub", lambda: hf_hub_download(
            repo_id, name, revision=revision, token=token, endpoint=endpoint, cache_dir=cache_dir))

    config_path = Path(download(CONFIG))
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise HubError(f"{repo_id}: {CONFIG} is {config_path.stat().st_size:,} bytes; not a bees_ants config")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise HubError(f"{repo_id}: {CONFIG} is not valid JSON ({e})") from None
    meta = meta_from_config(config)
    weights = download(WEIGHTS)
    try:
        state_dict = st.torch.load_file(weights)
    except (st.SafetensorError, OSError, ValueError) as e:
        raise HubError(f"{repo_id}: {WEIGHTS} is not a readable safetensors file ({str(e).splitlines()[0]})") from None
    return Checkpoint(state_dict, meta, f"{PREFIX}{repo_id}")
