"""The Evaluate & export tab: a saved model and its curves, an evaluation (summary, per class,
worst mistakes), and how to use what was downloaded or pushed to the Hub. The confusion matrix
is a matplotlib figure: bees_ants.figures, which the Hub card uses too."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from ..config import mode_text
from ..figures import history_of
from ..predict import Evaluation, Explanation
from ..stats import wilson_interval
from .common import best_interval, thumbnail
from .plots import curves_html

PER_CLASS_COLUMNS = ["class", "images", "correct", "recall", "precision"]
MISTAKES_SHOWN = 24


def model_markdown(meta: dict) -> str:
    """A saved model in a few lines: backbone, mode, classes, best accuracy, data and settings."""
    hyper = meta.get("hyperparameters", {})
    head = f"## {meta['arch']} · {mode_text(meta['mode'], hyper.get('frozen_epochs', '?'))}"
    lines = [f"**Classes:** {', '.join(meta['class_names'])}"]
    if "best" in meta:
        ran = len(meta.get("history", []))
        lines.append(f"**Best val accuracy {meta['best']['val_acc']:.1%}**{best_interval(meta)} "
                     f"(epoch {meta['best']['epoch']} of {ran} run) · {meta.get('status', 'completed')}")
    dataset = meta.get("dataset", {})
    if dataset:
        sizes = " · ".join(f"{split} {sum(c.values())}" for split, c in dataset.get("counts", {}).items())
        lines.append(f"**Data:** `{Path(dataset['root']).name}` ({sizes} images)")
    if hyper:
        lines.append(f"{hyper['epochs']} epochs · batch {hyper['batch_size']} · lr {hyper['lr']:g} · "
                     f"momentum {hyper['momentum']:g} · LR ×{hyper['gamma']:g} every {hyper['step_size']} epochs")
    lines.append(f"{meta.get('device', '')} · {meta.get('created', '')[:16].replace('T', ' ')}".strip(" ·"))
    return head + "\n" + "  \n".join(lines)


def checkpoint_curves(meta: dict) -> str:
    """The same curves for a saved model, from the history its checkpoint keeps, over the epochs
    it ran (a cancelled run's plan does not matter any more)."""
    history = history_of(meta)
    frozen = meta.get("hyperparameters", {}).get("frozen_epochs") if meta["mode"] == "progressive" else None
    return curves_html([(None, history)], len(history), "no epochs recorded", frozen)


# Code lines stay short: the note sits in a narrow column.
CHECKPOINT_HOWTO = """**`{name}`** holds the trained weights and everything needed to use them: classes
({classes}), preprocessing, hyperparameters, history. Classify with this project:

```bash
python -m bees_ants predict \\
    {name} photo.jpg
```
or `Predictor(path).predict(["photo.jpg"])` from `bees_ants.predict`. It is a plain torch file:
`torch.load(path, weights_only=True)` gives a dict with `state_dict` and `meta`."""

PROGRAM_HOWTO = """**`{name}`** is a `torch.export` program: it runs with torch alone, without this project.
Give it uint8 RGB crops, (N, 3, {crop}, {crop}): the shorter side resized to {resize}, then
center-cropped. It returns the probabilities of {classes}, (N, {n}). Normalisation is inside; the
class names and this recipe are stored in the file:

```python
import json, torch
extra = {{"bees_ants.json": ""}}
program = torch.export.load(
    "{name}",
    extra_files=extra)
info = json.loads(extra["bees_ants.json"])
probs = program.module()(crops)
```"""


ONNX_HOWTO = """**`{name}`** is an ONNX model: it runs with onnxruntime alone (no torch, no project), in
Python, C++, C#, Java, JavaScript (onnxruntime-web) or on a phone. Input `crops`: uint8 RGB,
(N, 3, {crop}, {crop}), the shorter side resized to {resize}, then center-cropped. Output
`probabilities` of {classes}, (N, {n}). Its metadata holds `class_names` and `preprocessing`
(`resize_size`, `crop_size`, `interpolation`):

```python
import json, onnxruntime as ort
s = ort.InferenceSession("{name}")
info = json.loads(s.get_modelmeta()
    .custom_metadata_map["bees_ants.json"])
classes = info["class_names"]
prep = info["preprocessing"]  # resize {resize}, crop {crop}
probs = s.run(None, {{"crops": crops}})[0]
```"""

WEB_PAGE_HOWTO = """**`{name}`** is the model as a web page: unzip it and serve the folder from any static host;
it classifies the webcam and dropped images of {classes} in the visitor's browser
(onnxruntime-web), with no server of ours. Pages: `window.beesAnts.classify(image)`.

```bash
unzip {name} && cd {stem}
python -m http.server 8000   # then open http://localhost:8000
```
GitHub Pages or a static Space serve it the same way (see the README)."""
HOWTO = {".pt": CHECKPOINT_HOWTO, ".pt2": PROGRAM_HOWTO, ".onnx": ONNX_HOWTO, ".zip": WEB_PAGE_HOWTO}


def takeaway_markdown(path: str, meta: dict) -> str:
    """How to use a downloaded checkpoint (.pt), exported program (.pt2), ONNX model (.onnx) or
    web page (.web.zip)."""
    prep = meta["preprocessing"]
    return HOWTO[Path(path).suffix].format(name=Path(path).name, stem=Path(path).stem,
                                           classes=", ".join(meta["class_names"]), n=len(meta["class_names"]),
                                           crop=prep["crop_size"], resize=prep["resize_size"])


def pushed_markdown(url: str, repo_id: str, evaluated: bool) -> str:
    """What a push to the Hub made, and how to use it from anywhere."""
    card = "metrics, confusion matrix and curves" if evaluated else "metrics and curves (its val set is not here)"
    return (f"✓ Pushed to [{repo_id}]({url}): `model.safetensors`, `config.json` and a model card with {card}. "
            f"Use it anywhere:\n\n```bash\npython -m bees_ants predict \\\n    {repo_id} photo.jpg\n```")


def _correct(ev: Evaluation) -> int:
    return sum(ev.confusion[i][i] for i in range(len(ev.classes)))


def evaluation_markdown(ev: Evaluation, meta: dict) -> str:
    n, correct = len(ev.true), _correct(ev)
    lo, hi = wilson_interval(ev.accuracy, n)
    text = (f"## {ev.split} accuracy {ev.accuracy:.1%} ({correct} of {n} images) · loss {ev.loss:.3f}\n"
            f"95% confidence interval {lo:.1%}–{hi:.1%} (Wilson, from the {n} images: the accuracy on new images "
            "like these plausibly lies there).")
    if "best" in meta:
        text += f"\nRecorded when it was trained: {meta['best']['val_acc']:.1%} (epoch {meta['best']['epoch']})."
    text += ("\n\nPer class, *recall* is the share of its images classified right (the class's accuracy), "
             "*precision* the share of its predictions that were right (— if it was never predicted).")
    wrong = n - correct
    if not wrong:
        return text + "\n\n**No mistakes**: every image was classified correctly."
    shown = min(wrong, MISTAKES_SHOWN)
    return (text + f"\n\n**{wrong} mistake(s)**; below, " + (f"the {shown} worst" if shown < wrong else "all")
            + " of them, most confidently wrong (highest loss) first.")


def per_class_table(ev: Evaluation) -> pd.DataFrame:
    """One row per class and one for all: images, correct, recall (the class's accuracy), precision."""
    rows = []
    for i, (name, m) in enumerate(ev.per_class().items()):
        predicted = sum(row[i] for row in ev.confusion)
        rows.append([name, m["images"], ev.confusion[i][i], f"{m['recall']:.1%}",
                     f"{m['precision']:.1%}" if predicted else "—"])  # never predicted
    rows.append(["all", len(ev.true), _correct(ev), f"{ev.accuracy:.1%}", ""])
    return pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)


def shown_mistakes(ev: Evaluation) -> list[int]:
    """The misclassified images the app shows: the worst MISTAKES_SHOWN, worst first."""
    return ev.mistakes()[:MISTAKES_SHOWN]


def mistake_items(ev: Evaluation, explanations: list[Explanation] | None = None) -> list[tuple[Image.Image, str]]:
    """The shown mistakes captioned 'true: ants · predicted: bees (97%)': thumbnails, or with
    `explanations` (one per shown mistake, for its predicted class) their Grad-CAM overlays."""
    shown = shown_mistakes(ev)
    if explanations is None:
        images = [(thumbnail(ev.paths[i]), i) for i in shown]
    else:  # an image deleted since the evaluation has no overlay
        images = [(e.overlay(), i) for e, i in zip(explanations, shown, strict=True) if e.error is None]
    return [(image, f"true: {ev.classes[ev.true[i]]} · predicted: {ev.classes[ev.predicted[i]]} "
             f"({ev.confidence[i]:.0%})") for image, i in images]
