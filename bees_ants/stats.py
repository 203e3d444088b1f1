"""How good a run is and when it stopped getting better: small pure functions, no torch.

One place for the rules the training loop, the CLI, the views, the model card and the recipe
benchmark must agree on: which epoch is best and when patience runs out (`improves`,
`stop_reason`), how sure an accuracy measured on n images is (`wilson_interval`), and how a
dataset is cut into cross-validation folds (`stratified_folds`). Torch-free, so the CLI and the
views import it for nothing.
"""
from __future__ import annotations

import math
import random

# What early stopping (and the choice of the best checkpoint) watches. Val loss alone ends runs that
# are still improving: on small sets it rises (the model grows confident on the images it gets
# wrong) while accuracy climbs. Accuracy is what the user sees as "best", so it is the default,
# the lower val loss breaking its ties (accuracy on 150 images moves in steps of ~0.7%).
STOP_METRICS = ("val_acc", "val_loss", "both")
STOP_METRIC_TEXT = {"val_acc": "val accuracy (ties: lower val loss)", "val_loss": "val loss",
                    "both": "val accuracy and val loss"}


def improves(score: tuple[float, float], best: tuple[float, float] | None, metric: str = "val_acc") -> bool:
    """Whether `score` (val_acc, val_loss) is a better epoch than `best` by `metric`: a lower val
    loss for "val_loss", else a higher val accuracy or an equal one with a lower val loss (so the
    best checkpoint is the one the user sees as best, also under "both")."""
    if best is None:
        return True
    (acc, loss), (best_acc, best_loss) = score, best
    if metric == "val_loss":
        return loss < best_loss
    return acc > best_acc or (acc == best_acc and loss < best_loss)


def epochs_since_best(scores: list[tuple[float, float]], metric: str) -> int:
    """Epochs after the best of `scores` (0: the last one is the best)."""
    best_at, best = 0, None
    for i, score in enumerate(scores):
        if improves(score, best, metric):
            best_at, best = i, score
    return len(scores) - 1 - best_at


def stop_reason(scores: list[tuple[float, float]], patience: int, metric: str = "val_acc") -> str:
    """Why a run should stop after the last of `scores` ((val_acc, val_loss) per epoch so far), or
    "" to go on. "both" stops only when neither val accuracy nor val loss has improved for
    `patience` epochs; patience 0 never stops."""
    if not patience or not scores:
        return ""
    if metric == "both":
        stalled = min(epochs_since_best(scores, "val_acc"), epochs_since_best(scores, "val_loss"))
    else:
        stalled = epochs_since_best(scores, metric)
    if stalled < patience:
        return ""
    return (f"stopped early after epoch {len(scores)}: no {STOP_METRIC_TEXT[metric]} improvement for "
            f"{patience} epoch{'s' if patience > 1 else ''}")


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score 95% interval of an accuracy measured on `n` images: where the accuracy on
    the population those images were drawn from plausibly lies. Unlike accuracy ± 1.96 standard
    errors it stays inside [0, 1] and is not zero-width at 100%."""
    if n <= 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def interval_text(accuracy: float, n: int) -> str:
    """e.g. "95% CI 91.0–97.4%, 153 images"."""
    lo, hi = wilson_interval(accuracy, n)
    return f"95% CI {lo:.1%}–{hi:.1%}, {n} images"


def within_interval(accuracy: float, n: int, other: float) -> bool:
    """Whether `other` lies inside the 95% interval of `accuracy` on `n` images: a difference the
    val set is too small to tell from chance."""
    lo, hi = wilson_interval(accuracy, n)
    return lo <= other <= hi


def stratified_folds(labels: list[int], k: int, seed: int = 0) -> list[list[int]]:
    """`k` disjoint folds of the indices of `labels` that together cover them all, each class
    spread evenly over the folds (shuffled with `seed`, so a fold's class shares match the set's)."""
    if k < 2:
        raise ValueError("need at least 2 folds")
    rng = random.Random(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    start = 0  # where the next class starts dealing, so small classes do not all land in fold 0
    for cls in sorted(set(labels)):
        members = [i for i, label in enumerate(labels) if label == cls]
        rng.shuffle(members)
        for j, i in enumerate(members):
            folds[(start + j) % k].append(i)
        start = (start + len(members)) % k
    return [sorted(f) for f in folds]
