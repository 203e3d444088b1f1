"""Load a checkpoint once, classify many images, draw the tutorial's labelled grids.

Per-file problems (unreadable, not an image, truncated) come back as a `Prediction` with an
`error`, never as an exception that would lose the other files' results.
"""
from __future__ import annotations

import functools
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import Checkpoint, load_checkpoint
from .data import DatasetError, eval_batches, load_dataset
from .device import autocast, inference_batch_size, pick_device
from .explain import feature_layer, gradcam, heatmap_overlay
from .images import DECODE_THREADS, UnreadableImage, center_crop_batch, image_to_tensor, load_image
from .models import Preprocessing

EXPLAIN_BATCH = 8  # images per Grad-CAM pass: a backward pass keeps every activation


@dataclass
class Prediction:
    name: str
    label: str | None = None
    confidence: float = 0.0
    probabilities: dict[str, float] | None = None
    error: str | None = None
    image: object | None = None  # the decoded, resized PIL image, for grids


@dataclass
class Explanation:
    """Where the model looked for one image: `heatmap` (H, W) in [0, 1] over `crop`, the uint8
    CHW center crop it saw, for class `label` (the predicted one unless another was asked for)."""
    name: str
    label: str | None = None
    confidence: float = 0.0  # the model's probability for `label`
    crop: torch.Tensor | None = None
    heatmap: torch.Tensor | None = None
    error: str | None = None

    def overlay(self):
        return heatmap_overlay(self.crop, self.heatmap)


@dataclass
class Evaluation:
    split: str
    classes: list[str]
    accuracy: float
    loss: float
    confusion: list[list[int]]  # confusion[true][predicted]
    paths: list[str]
    true: list[int]
    predicted: list[int]
    confidence: list[float]  # probability of the predicted class
    losses: list[float]  # per-image cross-entropy: high = confidently wrong

    def mistakes(self) -> list[int]:
        """Indices of misclassified images, worst (highest loss) first."""
        wrong = [i for i, (t, p) in enumerate(zip(self.true, self.predicted)) if t != p]
        return sorted(wrong, key=lambda i: -self.losses[i])

    def per_class(self) -> dict[str, dict[str, float]]:
        out = {}
        for i, name in enumerate(self.classes):
            tp = self.confusion[i][i]
            actual = sum(self.confusion[i])
            predicted = sum(row[i] for row in self.confusion)
            out[name] = {"images": actual,
                         "precision": tp / predicted if predicted else 0.0,
                         "recall": tp / actual if actual else 0.0}
        return out


class Predictor:
    def __init__(self, checkpoint: str | os.PathLike | Checkpoint, device: str | None = None):
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        meta = self.checkpoint.meta
        self.classes: list[str] = list(meta["class_names"])
        self.preprocessing = Preprocessing(**meta["preprocessing"])
        self.device = pick_device(device)
        self.model = self.checkpoint.build_model().to(self.device, memory_format=torch.channels_last)
        # Nothing trains it: no weight needs a gradient, so Grad-CAM (whose graph starts at the
        # feature map) records nothing for the layers before it.
        self.model.requires_grad_(False)

    def probabilities(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW crops -> class probabilities (N, C) on the CPU."""
        x = self.preprocessing.normalize(batch_uint8.to(self.device))
        with torch.inference_mode(), autocast(self.device):
            return self.model(x).float().softmax(1).cpu()

    def prepare(self, item) -> tuple[object, torch.Tensor | None, str | None]:
        """Path or file -> (resized PIL image, uint8 center crop, None) or (None, None, reason)."""
        try:
            img = load_image(item, self.preprocessing.resize_size, self.preprocessing.interpolation)
        except UnreadableImage as e:
            return None, None, str(e)
        except OSError as e:  # a path that vanished or cannot be opened
            return None, None, f"cannot open file: {e.strerror or e}"
        return img, center_crop_batch([image_to_tensor(img)], self.preprocessing.crop_size)[0], None

    def predict(self, items: list, batch_size: int | None = None, names: list[str] | None = None) -> list[Prediction]:
        """`items`: paths or file objects. Threads decode ahead while the model runs on the
        batches already decoded, so decoding hides behind the forward passes."""
        def result(i, name, img, crop, err):
            made = Prediction(name, error=err, image=img)
            return made, None if crop is None else (made, crop)
        return self._decoded_ahead(items, names, batch_size or inference_batch_size(self.device), result, self._label)

    def _decoded_ahead(self, items: list, names: list[str] | None, batch_size: int, result, run) -> list:
        """The one pipeline of `predict` and `explain`: threads decode `items` ahead of the model;
        `result(i, name, image, crop, error)` -> (the item's result, what `run` needs of it or None
        when unreadable); `run(batch)` gets those `batch_size` at a time. Returns every result."""
        names = names or [Path(str(getattr(i, "name", i))).name for i in items]
        results, pending = [], []
        with ThreadPoolExecutor(DECODE_THREADS) as pool:
            for i, (name, (img, crop, err)) in enumerate(zip(names, pool.map(self.prepare, items))):
                made, work = result(i, name, img, crop, err)
                results.append(made)
                if work is not None:
                    pending.append(work)
                if len(pending) == batch_size:
                    run(pending)
                    pending = []
        if pending:
            run(pending)
        return results

    def _label(self, batch: list[tuple[Prediction, torch.Tensor]]) -> None:
        probs = self.probabilities(torch.stack([crop for _, crop in batch]))
        for (result, _), p in zip(batch, probs):
            k = int(p.argmax())
            result.label, result.confidence = self.classes[k], float(p[k])
            result.probabilities = {c: float(v) for c, v in zip(self.classes, p)}

    @functools.cached_property
    def feature_layer(self) -> str:
        """The module whose output Grad-CAM explains, found on first use (explain.feature_layer)."""
        return feature_layer(self.model, self.preprocessing.crop_size)

    def explain(self, items: list, targets: list[int] | None = None, names: list[str] | None = None
                ) -> list[Explanation]:
        """Grad-CAM for each of `items` (paths or file objects): for the class index `targets[i]`
        when given, else for the predicted class. An unreadable item gets its `error`, as in
        `predict`. The crops are the predictor's own, so a heatmap lies on the pixels the model saw.
        As in `predict`, threads decode ahead while the model runs."""
        def result(i, name, img, crop, err):
            made = Explanation(name, crop=crop, error=err)
            return made, None if crop is None else (made, targets[i] if targets is not None else None)
        return self._decoded_ahead(items, names, EXPLAIN_BATCH, result, self._heatmaps)

    def _heatmaps(self, batch: list[tuple[Explanation, int | None]]) -> None:
        x = self.preprocessing.normalize(torch.stack([e.crop for e, _ in batch]).to(self.device))
        wanted = torch.tensor([t for _, t in batch]) if batch[0][1] is not None else None
        heatmaps, probs = gradcam(self.model, self.feature_layer, x, wanted)
        chosen = wanted if wanted is not None else probs.argmax(1)
        for (result, _), heatmap, p, c in zip(batch, heatmaps, probs, chosen.tolist()):
            result.heatmap, result.label, result.confidence = heatmap, self.classes[c], float(p[c])

    def evaluate(self, data_dir: str | os.PathLike, split: str = "val") -> Evaluation:
        dataset = load_dataset(data_dir, self.preprocessing, decode=(split,))
        if dataset.classes != self.classes:
            raise DatasetError(f"dataset classes {dataset.classes} differ from the model's {self.classes}")
        part = dataset.splits[split]
        probs = torch.cat([self.probabilities(x) for x, _ in
                           eval_batches(part, self.preprocessing.crop_size, inference_batch_size(self.device), self.device)])
        true = part.labels
        predicted = probs.argmax(1)
        n = len(self.classes)
        confusion = torch.zeros(n, n, dtype=torch.long)
        confusion.index_put_((true, predicted), torch.ones_like(true), accumulate=True)
        losses = torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), true, reduction="none")
        return Evaluation(split, self.classes, (predicted == true).float().mean().item(), losses.mean().item(),
                          confusion.tolist(), part.paths, true.tolist(), predicted.tolist(),
                          probs.max(1).values.tolist(), losses.tolist())


def image_grid(images: list, titles: list[str], colors: list[str] | None = None, ncols: int = 4):
    """A matplotlib figure of images with a title each (the tutorial's `visualize_model` look)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    n = max(1, len(images))
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig = Figure(figsize=(3.2 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(images):
            ax.imshow(images[k])
            ax.set_title(titles[k], fontsize=11, color=(colors[k] if colors else "black"))
    return fig


def short_name(name: str, width: int = 28) -> str:
    """A file name for a title: long ones keep their start and their extension."""
    return name if len(name) <= width else name[:width - 8] + "…" + name[-7:]


def predictions_figure(predictions: list[Prediction], ncols: int = 4):
    """One tile per classified file, titled with its file name, label and confidence."""
    shown = [p for p in predictions if p.error is None]
    titles = [f"{short_name(Path(p.name).name)}\n{p.label} · {p.confidence:.0%}" for p in shown]
    return image_grid([p.image for p in shown], titles, ncols=ncols)


def explanation_figure(explanation: Explanation):
    """The crop the model saw next to where it looked, titled with the file name, class and confidence."""
    from PIL import Image
    crop = Image.fromarray(explanation.crop.permute(1, 2, 0).numpy())
    titles = [short_name(Path(explanation.name).name),
              f"Grad-CAM: {explanation.label} · {explanation.confidence:.0%}"]
    return image_grid([crop, explanation.overlay()], titles, ncols=2)


def val_sample_figure(predictor: Predictor, data_dir: str | os.PathLike, count: int = 8,
                      seed: int | None = None, ncols: int = 4):
    """Predicted vs true label on random val images; mistakes in red."""
    root = Path(data_dir) / "val"
    files = [(p, cls) for cls in predictor.classes for p in sorted((root / cls).glob("*")) if p.is_file()]
    sample = random.Random(seed).sample(files, min(count, len(files)))
    preds = predictor.predict([p for p, _ in sample])
    shown = [(pr, cls) for pr, (_, cls) in zip(preds, sample) if pr.error is None]
    titles = [f"predicted: {pr.label} ({pr.confidence:.0%})\ntrue: {cls}" for pr, cls in shown]
    colors = ["#1a7f37" if pr.label == cls else "#cf222e" for pr, cls in shown]
    return image_grid([pr.image for pr, _ in shown], titles, colors, ncols=ncols)
