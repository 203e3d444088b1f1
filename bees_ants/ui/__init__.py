"""The Gradio app: widgets wired to the catalog, the job manager and the predictor.

One module per tab (train_tab, predict_tab, evaluate_tab, compare_tab); what they share is in
common. One class per tab lays out its widgets and wires their events right under them; its
methods are the handlers. A handler that updates several widgets returns {widget: value}:
widgets it leaves out keep what they show. `build_app` is the table of contents: the header, the
tabs and the one dependency between them, the model pickers (ModelPickers), which the Predict and
Evaluate tabs show and which a finished training job refreshes with its new checkpoint.

Who is asking: a page registers its browser (Visitors) on load; every handler asks
`Visitors.of(request, profile)` and passes that Visitor to the catalog and the job manager, which
decide what it may see and touch.
Train: the button asks the job manager for a job (queued or started, or refused with a reason);
the page's timer alone draws the visitor's job (every second while it is queued or running,
slowly otherwise), so a reloaded page catches up and nothing older can overwrite something
newer. The `seen` state is the job version this page last drew, so ticks redraw only when
something changed. API clients get /train, /follow and /status.
A zip upload on the Train tab becomes a new dataset folder in the visitor's own folder.
Predict: the visitor's and the shared checkpoints, loaded once each (catalog.load_predictor);
Explain draws where the model looked in the uploads (Grad-CAM), only when asked.
Evaluate & export: a checkpoint's curves (from its history), its confusion matrix, per-class
numbers and worst mistakes on its val set (plain, or with Grad-CAM heatmaps); the checkpoint, its
.pt2 or .onnx export to download (a copy in the visitor's download folder), the model pushed to
the Hugging Face Hub, or deleted.
Compare: several of the visitor's models, their curves on the same axes and a table of their runs.
Agents: hidden endpoints written for them (AgentTools: classify, list_models, training_status,
cancel_training), the only tools of Gradio's MCP server when the app runs with it
(`mcp_server_enabled`; launch with `agent_tools_only`).

Only a `UserError` (or a busy job) is shown as advice; any other exception is a bug and keeps its
traceback.
"""
from __future__ import annotations

import importlib.util
import os

import gradio as gr

from ..catalog import Settings
from ..housekeeping import Housekeeper
from ..jobs import JobManager
from ..settings import sign_in_offered
from ..zerogpu import on_zero_gpu
from .common import ModelPickers, Visitors, gradio_cache
from .compare_tab import CompareTab
from .evaluate_tab import EvaluateTab
from .predict_tab import PredictTab
from .tools import AgentTools, agent_tools_only  # noqa: F401 (app.py launches with it)
from .train_tab import TrainTab

TITLE = "Ants vs bees · transfer learning"
# Galleries without a fixed height still reserve 450 px; these two are sized by their images.
CSS = """#status h2, #model-card h2, #eval-summary h2 { margin: 0 0 .3em 0; font-size: var(--text-xl); }
#thumbs .fixed-height, #mistakes .fixed-height, #draft-gallery .fixed-height { min-height: 0; }
.curve-plots { display: flex; flex-wrap: wrap; gap: 8px; }
.curve-plot { flex: 1 1 300px; min-width: 0; max-width: 560px; font-size: 13px; fill: var(--body-text-color); }
.curve-plot .title { font-weight: 600; font-size: 14px; }
.curve-plot .grid { stroke: var(--border-color-primary); }
.curve-plot .unfrozen { stroke: gray; stroke-dasharray: 2 3; }
.curve-plot .note { fill: var(--body-text-color-subdued); }
.curve-plot .best { font-size: 18px; fill: #e8772e; stroke: var(--body-text-color); stroke-width: .6; }
.curve-legend { display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 13px; margin: 2px 0 0 46px; }
.curve-legend i { display: inline-block; width: 14px; height: 3px; margin: 0 6px 3px 0; vertical-align: middle; }
#draft-table th, #draft-table td { word-break: normal; overflow-wrap: normal; white-space: nowrap; }
/* Contrast (WCAG AA, 4.5:1) of the app's own text: the settings' explanations and the coloured buttons. */
:root { --block-info-text-color: #4b5563; --button-primary-background-fill: #c2410c;
        --button-primary-background-fill-hover: #9a3412; --button-cancel-background-fill: #b91c1c; }
.dark { --block-info-text-color: #d1d5db; }
.prose pre, .prose pre code { white-space: pre-wrap !important; overflow-wrap: anywhere; overflow: visible !important; max-height: none !important; }  /* no box to scroll (a keyboard cannot) */
.prose :not(pre) > code { white-space: normal; overflow-wrap: anywhere; }  /* a long path wraps on a phone */
.prose pre .token { color: inherit; }  /* the how-to snippets: the highlighter's pale strings fail it */
.prose pre .token.comment { color: var(--block-info-text-color); }
@media (max-width: 640px) {  /* a phone: tables and plots shrink to its width */
  #history table, #per-class table, #results table { font-size: 12px; }
}"""


def mcp_server_enabled(env=os.environ) -> bool:
    """Serve the app as an MCP server (at /gradio_api/mcp/) when gradio's mcp extra is installed,
    unless GRADIO_MCP_SERVER says otherwise; GRADIO_MCP_SERVER=true without the extra lets Gradio
    say what to install."""
    if env.get("GRADIO_MCP_SERVER"):
        return env["GRADIO_MCP_SERVER"].lower() == "true"
    return importlib.util.find_spec("mcp") is not None


def build_app(settings: Settings | None = None, jobs: JobManager | None = None) -> gr.Blocks:
    settings = settings or Settings.from_env()
    jobs = jobs or JobManager(settings.max_running, settings.max_queued, settings.jobs_dir,
                              request_bound=on_zero_gpu(), max_run_seconds=settings.max_run_seconds,
                              max_per_source=settings.max_per_address, signed_in_places=settings.signed_in_places)
    # Leftovers of work cut short, expired visitors and old temp files: swept now and every few minutes.
    # It also sweeps Gradio's cache folder (uploads and the like), in place of Gradio's delete_cache.
    housekeeper = Housekeeper(settings, gradio_cache(),
                              busy=lambda key: (job := jobs.latest(key)) is not None and job.active,
                              forget=jobs.forget)
    visitors = Visitors()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        with gr.Row(equal_height=True):
            gr.Markdown(f"# {TITLE}\nTrain an ImageNet backbone on an image folder, watch it learn, classify "
                        "your own pictures, see where it errs and take the model away.")
            if sign_in_offered():  # a Space with hf_oauth: true
                gr.LoginButton(scale=0, min_width=220)
        who = gr.Markdown(elem_id="visitor")
        browser_id = gr.BrowserState(None, storage_key="bees_ants_visitor", secret=settings.browser_secret())
        # The one link between tabs: Predict and Evaluate each show a model picker, and the Train
        # tab refreshes both when a run finishes, so its new checkpoint is picked there at once.
        models = ModelPickers(settings, visitors)
        with gr.Tabs(overflow_behavior="wrap"):  # on a phone every tab's name stays in view
            train = TrainTab(settings, jobs, visitors, models)
            PredictTab(settings, visitors, models, housekeeper)
            EvaluateTab(settings, visitors, models, jobs, housekeeper)
            CompareTab(settings, visitors)
        AgentTools(settings, visitors, jobs)
        # First learn who this page belongs to, then show their things: their datasets and the
        # form of their latest run, and their models (another page may have changed them since
        # this one was served). The page's job view is drawn by the Train tab's timer alone (see TrainTab).
        app.load(visitors.register, browser_id, [browser_id, who], api_visibility="private").then(
            train.restored_form, None, list(train.form.values()), api_visibility="private").then(
            models.refreshed, None, models.outputs, api_visibility="private")
    housekeeper.start(then=lambda: forget_removed_files(app))
    return app


def forget_removed_files(app: gr.Blocks) -> None:
    """Gradio remembers every file it puts in its cache folder, for its own sweep, which the app
    does not use (housekeeping.Housekeeper); forget those the app's sweep removed, or the lists
    grow with every upload for as long as the server runs."""
    for files in app.temp_file_sets:
        # list() copies the set at once, holding the GIL, while requests go on adding to it.
        for path in [p for p in list(files) if not os.path.exists(p)]:
            files.discard(path)
