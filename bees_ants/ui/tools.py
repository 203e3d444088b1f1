"""The app as a tool for agents: one `classify` endpoint with a docstring written for a model.

With the MCP server on (see `mcp_server_enabled`), Gradio lists every public endpoint as an MCP
tool, its docstring as the description; this is the one meant for agents (the others drive the
page). An MCP client that asks for `/gradio_api/mcp/?tools=classify` sees this one alone.
Its widgets are hidden: the endpoint has no place on the page, and hidden widgets still give
it Gradio's checks (an uploaded or fetched file, never a path on the server).
"""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from .. import catalog
from ..catalog import Settings
from ..errors import UserError
from .common import Visitors

TOP_CLASSES = 5


class AgentTools:
    def __init__(self, settings: Settings, visitors: Visitors):
        self.settings, self.visitors = settings, visitors
        image = gr.File(file_types=["image"], label="image", visible=False)
        model = gr.Textbox("", label="model", visible=False)
        result = gr.Textbox(label="classes (JSON)", visible=False)  # JSON text: what an MCP client reads
        run = gr.Button(visible=False)
        run.click(self.classify, [image, model], result, api_name="classify", concurrency_id="inference")

    def classify(self, image: str | None, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        """Classify one image with an image classifier trained on this server (an ImageNet backbone
        transferred to a few classes, e.g. ants vs bees) and return the most likely classes.

        Args:
            image: the image to classify (JPEG, PNG, WebP, GIF, BMP or TIFF): a URL or an uploaded file.
            model: which model to use: leave empty for the newest model this server offers, or give a model's file name (e.g. "mobilenet_v2-fixed-20260101-120000.pt"); an unknown name is answered with the list of names.

        Returns:
            JSON: {"model": the model's file name, "classes": every class it knows, "predictions": up to 5 {"label", "confidence"} pairs, most likely first; confidences are probabilities that sum to 1 over all classes}.
        """
        if not image:
            raise gr.Error("give an image to classify (a URL or a file)")
        try:
            path = catalog.named_checkpoint(self.settings, self.visitors.of(request, profile), model or "")
            predictor = catalog.load_predictor(path)
        except UserError as e:
            raise gr.Error(str(e)) from None
        result = predictor.predict([image])[0]
        if result.error:
            raise gr.Error(f"cannot classify this file: {result.error}")
        ranked = sorted(result.probabilities.items(), key=lambda kv: -kv[1])[:TOP_CLASSES]
        return json.dumps({"model": Path(path).name, "classes": predictor.classes,
                           "predictions": [{"label": label, "confidence": round(p, 4)} for label, p in ranked]})
