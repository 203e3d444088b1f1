"""Curves per epoch as SVG, shown in a gr.HTML: the one plot engine of the Train, Evaluate and
Compare tabs (`curves_html`).

Curves are drawn as SVG text (a few KB of coordinates), which the browser draws: nothing is
rendered to pixels on the server, and every redraw replaces the whole drawing, so a page never
shows a stale mix of two updates. (gr.LinePlot does this for the first draw only: Gradio 6.31
redraws it with the points of the update before when its axes or series change.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from ..figures import TRAIN_COLOR, VAL_COLOR
from ..train import EpochRecord

RUN_COLOURS = ("#2f6fdf", "#e8772e", "#2a9d5c", "#c23b8f", "#7a5cd6", "#b08d1a", "#1d9bb2", "#d6453d")
PLOT_W, PLOT_H = 460, 250
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 46, 14, 30, 34


@dataclass
class Series:
    label: str
    colour: str
    dashed: bool
    points: list[tuple[int, float]]  # (epoch, value); non-finite values are left out


def _nice_step(span: float, ticks: int) -> float:
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _plot_svg(title: str, series: list[Series], epochs: int, percent: bool, empty_text: str,
              best: tuple[int, float] | None, unfrozen_after: int | None) -> str:
    """One plot: value per epoch, x from 1 to `epochs`, y from 0 (to 100% for accuracies)."""
    values = [v for s in series for _, v in s.points]
    top = 1.0 if percent else max(values, default=1.0) * 1.1 or 1.0
    y_step = 0.25 if percent else _nice_step(top, 4)
    top = math.ceil(top / y_step - 1e-9) * y_step
    x_max = max(epochs, 2)
    inner_w, inner_h = PLOT_W - MARGIN_L - MARGIN_R, PLOT_H - MARGIN_T - MARGIN_B

    def x(epoch: float) -> float:
        return MARGIN_L + (epoch - 1) / (x_max - 1) * inner_w

    def y(value: float) -> float:
        return MARGIN_T + inner_h - min(value, top) / top * inner_h

    def label(value: float) -> str:
        return f"{value:.0%}" if percent else f"{value:.4g}"

    out = [f'<svg viewBox="0 0 {PLOT_W} {PLOT_H}" role="img" aria-label="{title}" class="curve-plot">',
           f'<text x="{MARGIN_L}" y="18" class="title">{title}</text>']
    for i in range(round(top / y_step) + 1):
        v = i * y_step
        out.append(f'<line x1="{MARGIN_L}" x2="{PLOT_W - MARGIN_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
                   f'<text x="{MARGIN_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{label(v)}</text>')
    x_step = max(1, math.ceil(_nice_step(x_max - 1, 8)))
    for epoch in range(1, x_max + 1, x_step):
        out.append(f'<text x="{x(epoch):.1f}" y="{PLOT_H - MARGIN_B + 16}" text-anchor="middle">{epoch}</text>')
    out.append(f'<text x="{MARGIN_L + inner_w / 2:.1f}" y="{PLOT_H - 4}" text-anchor="middle">epoch</text>')
    if unfrozen_after is not None and unfrozen_after < epochs:
        ux = x(unfrozen_after + 0.5)
        out.append(f'<line x1="{ux:.1f}" x2="{ux:.1f}" y1="{MARGIN_T}" y2="{MARGIN_T + inner_h}" class="unfrozen"/>'
                   f'<text x="{ux + 4:.1f}" y="{MARGIN_T + 10}" class="note">unfrozen</text>')
    for s in series:
        coords = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in s.points)
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        out.append(f'<polyline points="{coords}" fill="none" stroke="{s.colour}" stroke-width="2"{dash}/>')
        out += [f'<circle cx="{x(e):.1f}" cy="{y(v):.1f}" r="3" fill="{s.colour}" class="point">'
                f'<title>{escape(s.label)} · epoch {e}: {label(v) if percent else f"{v:.4f}"}</title></circle>'
                for e, v in s.points]
    if best is not None:
        out.append(f'<text x="{x(best[0]):.1f}" y="{y(best[1]) + 6:.1f}" text-anchor="middle" class="best">★'
                   f'<title>best val acc {best[1]:.1%} (epoch {best[0]})</title></text>')
    if not values:
        out.append(f'<text x="{MARGIN_L + inner_w / 2:.1f}" y="{MARGIN_T + inner_h / 2:.1f}" text-anchor="middle" '
                   f'class="note">{escape(empty_text)}</text>')
    return "".join(out) + "</svg>"


def curves_html(runs: list[tuple[str | None, list[EpochRecord]]], epochs: int, empty_text: str = "",
                unfrozen_after: int | None = None) -> str:
    """Loss and accuracy per epoch, side by side, x from 1 to `epochs`, and a legend. A run
    labelled None is the only one: train and val in two colours, its best val epoch starred.
    Several runs: a colour per run, val solid, train dashed."""
    one = len(runs) == 1 and runs[0][0] is None
    plots = {}
    for metric, title, percent in (("loss", "Loss", False), ("acc", "Accuracy", True)):
        series = []
        for i, (name, history) in enumerate(runs):
            for split in ("train", "val"):
                points = [(r.epoch, getattr(r, f"{split}_{metric}")) for r in history]
                # A diverged run logs inf/nan losses: leave those points out.
                points = [(e, v) for e, v in points if math.isfinite(v)]
                colour = ((TRAIN_COLOR if split == "train" else VAL_COLOR) if one
                          else RUN_COLOURS[i % len(RUN_COLOURS)])
                label = split if one else f"{name} · {split}"
                series.append(Series(label, colour, dashed=split == "train" and not one, points=points))
        history = runs[0][1] if one else []
        best = (history[-1].best_epoch, history[-1].best_val_acc) if history and percent else None
        plots[metric] = _plot_svg(title, series, epochs, percent, empty_text, best, unfrozen_after if one else None)
    if one:
        legend = (f'<span><i style="background:{TRAIN_COLOR}"></i>train</span>'
                  f'<span><i style="background:{VAL_COLOR}"></i>val</span>')
        if runs[0][1]:
            legend += "<span>★ best val accuracy</span>"
    else:
        legend = "".join(f'<span><i style="background:{RUN_COLOURS[i % len(RUN_COLOURS)]}"></i>{escape(name)}</span>'
                         for i, (name, _) in enumerate(runs)) + "<span>solid: val · dashed: train</span>"
    return (f'<div class="curves"><div class="curve-plots">{plots["loss"]}{plots["acc"]}</div>'
            f'<div class="curve-legend">{legend}</div></div>')
