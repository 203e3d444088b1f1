"""The Predict tab: uploads classified (gallery, per-file table, unreadable files) and explained."""
from __future__ import annotations

import pandas as pd
from PIL import Image

from ..predict import Explanation, Prediction


def gallery_items(predictions: list[Prediction]) -> list[tuple[Image.Image, str]]:
    return [(p.image, f"{p.label} · {p.confidence:.0%}") for p in predictions if p.error is None]


def explanation_items(explanations: list[Explanation]) -> list[tuple[Image.Image, str]]:
    """Grad-CAM overlays on the crops the model saw, captioned like the predictions gallery."""
    return [(e.overlay(), f"{e.label} · {e.confidence:.0%}") for e in explanations if e.error is None]


def problems_markdown(predictions: list[Prediction]) -> str:
    bad = [p for p in predictions if p.error is not None]
    if not bad:
        return f"Classified {len(predictions)} image(s)." if predictions else ""
    text = (f"Classified {len(predictions) - len(bad)} of {len(predictions)} file(s). "
            f"**{len(bad)} could not be read:**")
    return text + "".join(f"\n- `{p.name}`: {p.error}" for p in bad)


def predictions_table(predictions: list[Prediction]) -> pd.DataFrame:
    rows = [[p.name, p.label or "", round(p.confidence, 4) if p.error is None else None, p.error or ""]
            for p in predictions]
    return pd.DataFrame(rows, columns=["file", "label", "confidence", "problem"])
