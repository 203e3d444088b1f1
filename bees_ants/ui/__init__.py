"""The Gradio app: widgets wired to the catalog, the job manager and the predictor.

One module per tab (train_tab, predict_tab, evaluate_tab); what they share is in common. One class per tab lays out its widgets and wires their events right under them; its methods are
the handlers. A handler that updates several widgets returns {widget: value}: widgets it leaves
out keep what they show. `build_app` is the table of contents: the header, the three tabs and
the one dependency between them, the model pickers (ModelPickers), which the Predict and
Evaluate tabs show and which a finished training job refreshes with its new checkpoint.

Who is asking: a page registers its browser (Visitors) on load; every handler asks
`Visitors.of(request, profile)` and passes that Visitor to the catalog and the job manager, which
decide what it may see and touch.
Train: the button asks the job manager for a job (queued or started, or refused with a reason);
the page's 1 s timer alone draws the visitor's job, so a reloaded page catches up and nothing
older can overwrite something newer. The `seen` state is the job version this page last drew,
so ticks redraw only when something changed. API clients get /train, /follow and /status.
A zip upload on the Train tab becomes a new dataset folder in the visitor's own folder.
Predict: the visitor's and the shared checkpoints, loaded once each (catalog.load_predictor).
Evaluate & export: a checkpoint's curves (from its history), its confusion matrix, per-class
numbers and worst mistakes on its val set, and the checkpoint or its .pt2 export to download.

Only a `UserError` (or a busy job) is shown as advice; any other exception is a bug and keeps its
traceback.
"""
from __future__ import annotations

import os

import gradio as gr

from ..catalog import Settings
from ..checkpoint import remove_stale_temp_files
from ..jobs import JobManager
from ..zerogpu import on_zero_gpu
from .common import ModelPickers, Visitors
from .evaluate_tab import EvaluateTab
from .predict_tab import PredictTab
from .train_tab import TrainTab

TITLE = "Ants vs bees · transfer learning"
# Galleries without a fixed height still reserve 450 px; these two are sized by their images.
CSS = """#status h3, #model-card h3, #eval-summary h3 { margin: 0 0 .3em 0; }
#thumbs .fixed-height, #mistakes .fixed-height, #draft-gallery .fixed-height { min-height: 0; }"""



def build_app(settings: Settings | None = None, jobs: JobManager | None = None) -> gr.Blocks:
    settings = settings or Settings.from_env()
    # Saves cut short by a kill leave hidden temp files; those older than any save still running.
    remove_stale_temp_files(settings.weights_dir)
    jobs = jobs or JobManager(settings.max_running, settings.max_queued, settings.jobs_dir,
                              request_bound=on_zero_gpu())
    visitors = Visitors()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        with gr.Row(equal_height=True):
            gr.Markdown(f"# {TITLE}\nTrain an ImageNet backbone on an image folder, watch it learn, classify "
                        "your own pictures, see where it errs and take the model away.")
            if os.environ.get("OAUTH_CLIENT_ID"):  # a Space with hf_oauth: true
                gr.LoginButton(scale=0, min_width=220)
        who = gr.Markdown(elem_id="visitor")
        browser_id = gr.BrowserState(None, storage_key="bees_ants_visitor", secret=settings.browser_secret())
        # The one link between tabs: Predict and Evaluate each show a model picker, and the Train
        # tab refreshes both when a run finishes, so its new checkpoint is picked there at once.
        models = ModelPickers(settings, visitors)
        with gr.Tabs():
            train = TrainTab(settings, jobs, visitors, models)
            PredictTab(settings, visitors, models)
            EvaluateTab(settings, visitors, models)
        # First learn who this page belongs to, then show their things: their job, their datasets
        # and models (another page may have changed them since this one was served).
        # The page's job view is drawn by the Train tab's timer alone (see TrainTab).
        app.load(visitors.register, browser_id, [browser_id, who], api_visibility="private").then(
            train.dataset_picker, None, train.dataset, api_visibility="private").then(
            models.refreshed, None, models.outputs, api_visibility="private")
    return app
