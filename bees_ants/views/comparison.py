"""The Compare tab: several saved runs side by side, their curves on the same axes and a table of
what each trained, how, and what came out."""
from __future__ import annotations

from pathlib import Path

from ..config import mode_text
from ..figures import history_of
from ..stats import interval_text, wilson_interval, within_interval
from .common import duration, val_images
from .plots import curves_html

NOT_RECORDED = "—"  # a checkpoint from before a value was kept
# Hyperparameters not listed among the others: arch and mode have rows of their own, and image_size
# shows as the input size every checkpoint's preprocessing records (older ones have no image_size,
# and None means "the architecture's own").
NOT_COMPARED = {"arch", "mode", "image_size"}


def run_name(number: int, meta: dict) -> str:
    """Short enough for a legend: '#2 resnet18/fixed 11-23 20:01'."""
    when = meta.get("created", "")[5:16].replace("T", " ")
    return f"#{number} {meta['arch']}/{meta['mode']} {when}".strip()


def comparison_curves(metas: list[dict]) -> str:
    """Every run's curves on the same axes, named as in the comparison table."""
    runs = [(run_name(i, m), history_of(m)) for i, m in enumerate(metas, 1)]
    return curves_html(runs, max((len(h) for _, h in runs), default=1), "no epochs recorded")


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _hyper_value(key: str, value) -> str:
    if key == "backbone_weights":  # a path: its file name says which weights
        return "random init" if value is None else Path(str(value)).name
    return f"{value:g}" if isinstance(value, float) else str(value)


def comparison_markdown(metas: list[dict]) -> str:
    """One column per run: what it trained (backbone, mode, data and its content hash), how
    (the hyperparameters that differ; those that do not, below the table) and what came out
    (best val accuracy, its epoch, time in epochs, device). Rows that differ between runs are in bold."""
    if not metas:
        return "Pick two or more of your models to compare them."
    rows = []

    def row(label: str, values: list) -> None:
        values = [_cell(v) for v in values]
        differs = len(metas) > 1 and len(set(values)) > 1
        rows.append(f"| {'**' + label + '**' if differs else label} | " + " | ".join(values) + " |")

    datasets = [m.get("dataset", {}) for m in metas]
    row("backbone", [m["arch"] for m in metas])
    row("mode", [mode_text(m["mode"], m.get("hyperparameters", {}).get("frozen_epochs", "?")) for m in metas])
    row("data", [f"`{Path(d['root']).name}`" if d.get("root") else NOT_RECORDED for d in datasets])
    row("images", [" · ".join(f"{s} {sum(c.values())}" for s, c in d["counts"].items()) if d.get("counts")
                   else NOT_RECORDED for d in datasets])
    row("classes", [", ".join(m["class_names"]) for m in metas])
    row("data hash", [f"`{d['hash'][:12]}`" if d.get("hash") else NOT_RECORDED for d in datasets])
    hypers = [m.get("hyperparameters", {}) for m in metas]
    keys = sorted({k for h in hypers for k in h} - NOT_COMPARED)
    shown = {k: [_hyper_value(k, h[k]) if k in h else NOT_RECORDED for h in hypers] for k in keys}
    shown["input size"] = [f"{m['preprocessing']['crop_size']} px" if m.get("preprocessing") else NOT_RECORDED
                           for m in metas]
    same = {k: v[0] for k, v in shown.items() if len(set(v)) == 1}
    for key, values in shown.items():
        if key not in same or len(metas) == 1:
            row(key, values)
    row("best val acc", [f"{m['best']['val_acc']:.1%}" if "best" in m else NOT_RECORDED for m in metas])
    row("95% interval", [_interval_cell(m) for m in metas])
    row("epoch of best", [f"{m['best']['epoch']} of {len(m.get('history', []))}" if "best" in m else NOT_RECORDED
                          for m in metas])
    row("time in epochs", [duration(sum(r["seconds"] for r in m["history"])) if m.get("history") else NOT_RECORDED
                      for m in metas])
    row("device", [m.get("device") or NOT_RECORDED for m in metas])
    row("status", [m.get("status", "completed") for m in metas])
    header = "| run | " + " | ".join(f"**{run_name(i, m)}**" for i, m in enumerate(metas, 1)) + " |"
    text = "\n".join([header, "|---" * (len(metas) + 1) + "|", *rows])
    if len(metas) == 1:
        return text + "\n\nPick another model to compare with."
    if same:
        text += "\n\nThe same in all: " + " · ".join(f"{k} {_cell(v)}" for k, v in same.items())
    return text + ("\n\nIn **bold**: what differs. Time in epochs: the epochs' own times added up; the "
                   "Train tab's \"Finished in\" also counts loading the images before the first epoch."
                   + _indistinct(metas))


def _interval_cell(meta: dict) -> str:
    if "best" not in meta or not val_images(meta):
        return NOT_RECORDED
    lo, hi = wilson_interval(meta["best"]["val_acc"], val_images(meta))
    return f"{lo:.1%}–{hi:.1%} ({val_images(meta)} images)"


def _indistinct(metas: list[dict]) -> str:
    """Which runs' best val accuracy lies inside the 95% interval of the best run's: a difference
    that small is within what chance gives on a val set of that size, so it ranks nothing."""
    scored = [(i, m) for i, m in enumerate(metas, 1) if "best" in m and val_images(m)]
    if len(scored) < 2:
        return ""
    top_i, top = max(scored, key=lambda im: im[1]["best"]["val_acc"])
    close = [run_name(i, m) for i, m in scored
             if i != top_i and within_interval(top["best"]["val_acc"], val_images(top), m["best"]["val_acc"])]
    if not close:
        return ""
    return (f"\n\n**Inside the interval:** the best val accuracy of {', '.join(close)} lies within the 95% interval "
            f"of {run_name(top_i, top)}'s ({interval_text(top['best']['val_acc'], val_images(top))}): "
            "the val set is too small to tell these runs apart.")
