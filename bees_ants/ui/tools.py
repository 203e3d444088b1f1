"""The app as a tool for agents: the few endpoints an MCP client gets, each written for a model.

Gradio's MCP server (see `mcp_server_enabled`) would offer every public endpoint as a tool,
including the page's plumbing (a token field, State inputs, outputs shaped for widgets). The
agent's set is deliberate instead (AGENT_TOOLS): classify, list the models it may use, and see or
cancel its own training run, each with one JSON or text answer and a docstring saying what it
does and returns. `agent_tools_only` keeps the MCP server to those; the page's endpoints stay
public for gradio_client users.

Who an agent is: Gradio relays every agent's call through one internal client, so the session
cannot tell two agents apart. An agent that sends the X-Bees-Ants-Key header is the visitor of
that key (visitors.identify decides, for the page, the API and MCP alike); one that sends none
is anonymous: the shared models only, nothing of its own.
The widgets are hidden: these endpoints have no place on the page, and hidden widgets still give
them Gradio's checks (an uploaded or fetched file, never a path on the server).
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import gradio as gr

from .. import catalog
from ..catalog import Settings
from ..errors import UserError
from ..jobs import Job, JobManager
from .common import Visitors

# Gradio warns at launch about the page's /follow (a State input) as if it were a tool; it is not
# one once agent_tools_only has run.
warnings.filterwarnings("ignore", message="This MCP server includes a tool that has a gr.State input")

TOP_CLASSES = 5
AGENT_TOOLS = ("classify", "list_models", "training_status", "cancel_training")  # their endpoints' names


class AgentTools:
    def __init__(self, settings: Settings, visitors: Visitors, jobs: JobManager):
        self.settings, self.visitors, self.jobs = settings, visitors, jobs
        image = gr.File(file_types=["image"], label="image", visible=False)
        model = gr.Textbox("", label="model", visible=False)
        answer = gr.Textbox(label="answer", visible=False)  # JSON or a sentence: what an MCP client reads
        run = gr.Button(visible=False)
        run.click(self.classify, [image, model], answer, api_name="classify", concurrency_id="inference")
        run.click(self.list_models, None, answer, api_name="list_models")
        run.click(self.training_status, None, answer, api_name="training_status")
        run.click(self.cancel_training, None, answer, api_name="cancel_training", concurrency_limit=None)

    def classify(self, image: str | None, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        """Classify one image with an image classifier trained on this server (an ImageNet backbone
        transferred to a few classes, e.g. ants vs bees) and return the most likely classes.

        Args:
            image: the image to classify (JPEG, PNG, WebP, GIF, BMP or TIFF): a URL or an uploaded file.
            model: which model to use: leave empty for the newest model you may use, or give a model's file name from list_models (e.g. "mobilenet_v2-fixed-20260101-120000.pt"); an unknown name is answered with the list of names.

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
        result = predictor.predict([image], names=["image"])[0]
        if result.error:
            raise gr.Error(f"cannot classify this file: {result.error}")
        ranked = sorted(result.probabilities.items(), key=lambda kv: -kv[1])[:TOP_CLASSES]
        return json.dumps({"model": Path(path).name, "classes": predictor.classes,
                           "predictions": [{"label": label, "confidence": round(p, 4)} for label, p in ranked]})

    def list_models(self, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        """List the image classifiers you may use with classify: the server's shared models and,
        when you send your X-Bees-Ants-Key header, the ones trained under your key. Newest first.

        Returns:
            JSON: {"models": [{"model": file name to pass to classify, "classes": the classes it tells apart, "about": backbone, training mode, val accuracy and date, "yours": true for a model trained under your key}]}.
        """
        visitor = self.visitors.of(request, profile)
        own = None if visitor.anonymous else catalog.checkpoint_folder(self.settings, visitor).resolve()
        models = []
        for label, path in catalog.checkpoint_choices(self.settings, visitor):
            try:
                meta = catalog.checkpoint_metas(self.settings, visitor, [path])[0]
            except UserError:  # removed since it was listed
                continue
            models.append({"model": Path(path).name, "classes": meta["class_names"], "about": label,
                           "yours": Path(path).resolve().parent == own})
        return json.dumps({"models": models})

    def training_status(self, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        """Where your newest training run stands (runs are started under your X-Bees-Ants-Key, e.g.
        from Python with the same header; without a key you have none).

        Returns:
            JSON: {"status": "none", "queued", "preparing", "scanning", "running", "completed", "cancelled", "failed" or "interrupted", "dataset": its folder's name, "epochs_done", "epochs", "best_val_accuracy": the best val accuracy so far (0-1) or null, "queue_position": 1 for next to start (queued only), "model": the file name of its best checkpoint for classify, or null, "error": why it failed, or null}.
        """
        return json.dumps(job_summary(self.jobs.latest(self.visitors.of(request, profile).key)))

    def cancel_training(self, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        """Cancel your own queued or running training run (the one training_status shows); a
        running one stops after the current batch and keeps its best checkpoint so far. Other
        visitors' runs are out of reach.

        Returns:
            a sentence: whether a run was asked to stop, or that you have none to cancel.
        """
        if self.jobs.cancel(self.visitors.of(request, profile).key):
            return "Cancel requested: a queued run leaves the queue; a running one stops after the current batch."
        return "Nothing to cancel: you have no queued or running training run."


def job_summary(job: Job | None) -> dict:
    """A job as an agent reads it (see training_status)."""
    if job is None:
        return {"status": "none", "dataset": None, "epochs_done": 0, "epochs": 0, "best_val_accuracy": None,
                "queue_position": None, "model": None, "error": None}
    return {"status": job.status, "dataset": Path(job.config.data_dir).name, "epochs_done": len(job.history),
            "epochs": job.config.epochs,
            "best_val_accuracy": round(job.history[-1].best_val_acc, 4) if job.history else None,
            "queue_position": job.queue_position if job.status == "queued" else None,
            "model": Path(job.checkpoint_path).name if job.checkpoint_path else None, "error": job.error}


def agent_tools_only(app: gr.Blocks):
    """A lifespan (launch(app_kwargs={"lifespan": ...})) that keeps the app's MCP server to
    AGENT_TOOLS. Gradio 6 has no per-event switch for MCP: it offers exactly the public endpoints
    (those on the "Use via API" page), and "undocumented" would cost gradio_client users their
    keyword arguments. So the server's tool table (built at launch, before the lifespan runs and
    before any request is served; read by its list, call and schema routes alike) is narrowed
    here; tests/test_agents_app.py checks the list an agent gets."""

    @contextlib.asynccontextmanager
    async def lifespan(_):
        server = app.mcp_server_obj
        if server is not None:
            server.tool_to_endpoint = {tool: endpoint for tool, endpoint in server.tool_to_endpoint.items()
                                       if endpoint.lstrip("/") in AGENT_TOOLS}
        yield

    return lifespan
