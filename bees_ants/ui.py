"""The Gradio app: widgets wired to the catalog, the job manager and the predictor.

One class per tab lays out its widgets and wires their events right under them; its methods are
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

import functools
import os
from collections import OrderedDict
import tempfile
from pathlib import Path

import gradio as gr

from . import catalog, views
from .catalog import Settings
from .checkpoint import CheckpointError, load_checkpoint, remove_stale_temp_files
from .device import describe_device, pick_device
from .errors import UserError
from .importer import import_zip
from .jobs import Job, JobManager
from .config import ARCHS, MODES
from .data import DatasetDownloadError
from .models import WeightsDownloadError, fetch_imagenet_weights, imagenet_weights_cached
from .predict import Predictor, val_sample_figure
from .train import TrainConfig
from .visitors import Visitor, identify, new_browser_id
from .zerogpu import max_gpu_seconds, on_zero_gpu

DEFAULTS = TrainConfig(data_dir="")
VAL_GRID_IMAGES = 8
TITLE = "Ants vs bees · transfer learning"
NO_MODEL = "**No trained model yet** — train one in the **Train** tab, then pick it here."
# Galleries without a fixed height still reserve 450 px; these two are sized by their images.
CSS = """#status h3, #model-card h3, #eval-summary h3 { margin: 0 0 .3em 0; }
#thumbs .fixed-height, #mistakes .fixed-height { min-height: 0; }"""


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


def image_file(image, format: str = "JPEG") -> str:
    """A PIL image written once under a name of its own inside Gradio's cache folder, which
    Gradio then serves as it is. Every image the app shows goes through here.

    Handed PIL images, Gradio writes each to a cache path named by its content hash, truncating
    and rewriting the file if it is there: two requests showing the same image rewrite it while it
    is being served, and a download fails ("Too little data for declared Content-Length"). A file
    already in the cache is neither copied nor rewritten, and no other request uses its name."""
    folder = Path(gr.utils.get_upload_folder()) / "bees_ants-images"
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format=format, **({"quality": 90} if format == "JPEG" else {}))
        final = tmp[:-len(".tmp")] + "." + format.lower()
        os.replace(tmp, final)  # complete before anyone can know its name
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def gallery_files(items: list[tuple]) -> list[tuple[str, str]]:
    """(PIL image, caption) -> (file, caption), for a gallery (see image_file)."""
    return [(image_file(image), caption) for image, caption in items]


class Visitors:
    """Who is behind each request. A page tells us once, on load, which browser it is (an id kept
    in the browser's localStorage, so it survives reloads and restarts); a signed-in Hugging Face
    account wins over that; an API client is its session. Handlers call `of(request, profile)`."""

    MAX_PAGES = 100_000  # pages remembered; the oldest is forgotten (it re-registers on reload)

    def __init__(self):
        self._browsers: OrderedDict[str, str] = OrderedDict()  # Gradio session hash -> browser id

    def register(self, browser_id: str | None, request: gr.Request, profile: gr.OAuthProfile | None):
        browser_id = browser_id if identify(None, browser_id, None).identity.startswith("browser:") else None
        browser_id = browser_id or new_browser_id()
        self._browsers[request.session_hash] = browser_id
        self._browsers.move_to_end(request.session_hash)
        while len(self._browsers) > self.MAX_PAGES:
            self._browsers.popitem(last=False)
        visitor = self.of(request, profile)
        if visitor.signed_in:
            text = f"Signed in as **{visitor.name}**: your datasets, runs and models are yours alone."
        else:
            text = ("Your datasets, runs and models are private to this browser"
                    + (" (sign in to keep them across devices)." if os.environ.get("OAUTH_CLIENT_ID") else "."))
        return browser_id, text

    def of(self, request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> Visitor:
        session = getattr(request, "session_hash", None)
        return identify(profile.username if profile else None, self._browsers.get(session), session)


class ModelPickers:
    """The checkpoint lists of the Predict and Evaluate tabs, and the Predict tab's note when there
    is no checkpoint yet. Created unrendered: each tab renders its own in its layout."""

    def __init__(self, settings: Settings, visitors: Visitors):
        self.settings, self.visitors = settings, visitors
        self.predict = gr.Dropdown(label="Model", allow_custom_value=True, elem_id="model", render=False)
        self.note = gr.Markdown(label="model_note", elem_id="model-note", render=False)
        self.evaluate = gr.Dropdown(label="Model", allow_custom_value=True, elem_id="eval-model", render=False)
        self.outputs = [self.predict, self.note, self.evaluate]  # the /models endpoint's outputs, in order

    def refreshed(self, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        """Both lists read again, the newest of the visitor's checkpoints selected."""
        return self.for_visitor(self.visitors.of(request, profile))

    def for_visitor(self, visitor: Visitor) -> dict:
        choices = catalog.checkpoint_choices(self.settings, visitor)
        newest = choices[0][1] if choices else None
        return {self.predict: gr.Dropdown(choices=choices, value=newest), self.note: "" if choices else NO_MODEL,
                self.evaluate: gr.Dropdown(choices=choices, value=newest)}


# -- Train -----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _val_grid(checkpoint: str, mtime: float, data_dir: str, seed: int) -> str:
    # One grid file per finished run, drawn once and served to every page of its visitor
    # (mtime: the final save).
    figure = val_sample_figure(catalog.load_predictor(checkpoint), data_dir, VAL_GRID_IMAGES, seed)
    return image_file(views.figure_image(figure), "PNG")


def val_grid(job: Job | None) -> gr.Image:
    image = None
    if job is not None and not job.active and job.checkpoint_path and Path(job.config.data_dir, "val").is_dir():
        try:
            image = _val_grid(job.checkpoint_path, os.path.getmtime(job.checkpoint_path), job.config.data_dir, job.id)
        except (OSError, CheckpointError):  # the checkpoint was deleted or replaced since the run
            pass
    return gr.Image(image, visible=image is not None)  # no empty box while training


# The domain errors give the CLI's way out (its flags); the app has its own: an upload, the
# "Start from weights" list, or an environment variable read at start.
DATASET_OFFLINE = ("the ants/bees dataset could not be downloaded ({reason}). Offline? Add your own under "
                   "\"Add your own dataset (.zip)\", or restart the app with "
                   "BEES_ANTS_DATASETS=/path/to/hymenoptera_data (a local copy of the tutorial's set)")
WEIGHTS_OFFLINE = ("the ImageNet weights for {arch} could not be downloaded ({reason}). Offline? Pick "
                   "\"none (random init)\" in \"Start from weights\", or restart the app with "
                   "BEES_ANTS_BACKBONE_WEIGHTS=/path/to/weights.pth (a local state-dict file)")


def first_use_note(dataset: str | None, backbone: str | None, arch: str | None, settings: Settings) -> str:
    """Before Train is clicked: what the run will download first, and the way out when offline."""
    tutorial = next((c for c in catalog.dataset_choices(settings, None) if c.download_to), None)
    fetch, ways, restart = [], [], []
    if tutorial is not None and dataset == tutorial.path:
        fetch.append("the ants/bees set (45 MB)")
        ways.append("upload a dataset under **Add your own dataset (.zip)**")
        restart.append("`BEES_ANTS_DATASETS=/path/to/hymenoptera_data`")
    if backbone == "imagenet" and arch in ARCHS and not imagenet_weights_cached(arch):
        fetch.append(f"the ImageNet weights for {arch}")
        ways.append("pick **none (random init)** in **Start from weights**")
        restart.append("`BEES_ANTS_BACKBONE_WEIGHTS=/path/to/weights.pth`")
    if not fetch:
        return ""
    return (f"Downloaded on first use: {' and '.join(fetch)}. Offline? {', '.join(ways)}, or restart the app "
            f"with {' and '.join(restart)}.")


def prepare_run(choice: catalog.DatasetChoice, config: TrainConfig) -> None:
    """Run first in the job: fetch what is missing (the tutorial's set, ImageNet weights), so an
    offline machine hears about both at once and in the app's words."""
    problems = []
    if choice.download_to:
        try:
            choice.download()
        except DatasetDownloadError as e:
            problems.append(DATASET_OFFLINE.format(reason=e.reason))
    if config.backbone_weights == "imagenet":
        try:
            fetch_imagenet_weights(config.arch)
        except WeightsDownloadError as e:
            problems.append(WEIGHTS_OFFLINE.format(arch=e.arch, reason=e.reason))
    if problems:
        raise UserError("; and ".join(problems))


def _number(convert, value):
    """int or float of a training setting; an odd API value (a list, "x") is refused as advice."""
    try:
        return convert(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError("every training setting needs a number") from None


def device_note(jobs: JobManager) -> str:
    if jobs.request_bound:
        return (f"**Device:** ZeroGPU — each run gets a GPU for at most {max_gpu_seconds()} s, counted against "
                "your daily ZeroGPU quota. A run lives in this page: **leaving or reloading it stops the run** "
                "(its best checkpoint so far is kept).")
    queue = "one run at a time" if jobs.max_running == 1 else f"{jobs.max_running} runs at a time"
    return (f"**Device:** {describe_device(pick_device())} · {queue}; other visitors' runs queue, and yours "
            "keeps running if you close the page.")


class TrainTab:
    """Dataset (or a zip of one), backbone, mode and hyperparameters; Train and Cancel; the job view
    (status, dataset, curves, epochs, result, val predictions), which also refreshes the model
    pickers when a job finishes."""

    def __init__(self, settings: Settings, jobs: JobManager, visitors: Visitors, models: ModelPickers):
        self.settings, self.jobs, self.visitors, self.models = settings, jobs, visitors, models
        datasets = catalog.dataset_choices(settings, None)
        backbones = catalog.backbone_choices(settings)
        arch = catalog.default_arch(backbones)
        with gr.Tab("Train", id="train", elem_id="tab-train"), gr.Row():
            with gr.Column(scale=1, min_width=320):
                self.dataset = gr.Dropdown([(c.label, c.path) for c in datasets], label="Dataset",
                                           value=catalog.default_dataset(datasets).path, allow_custom_value=True,
                                           elem_id="dataset")
                with gr.Accordion("Add your own dataset (.zip)", open=False, elem_id="own-data"):
                    gr.Markdown(views.UPLOAD_HELP)
                    upload = gr.File(file_types=[".zip"], label="Dataset zip", height=100, elem_id="upload")
                    self.import_info = gr.Markdown(label="import", elem_id="import-info")
                    self.thumbs = gr.Gallery(label="A few training images per class", columns=views.THUMBNAILS_SHOWN,
                                             object_fit="cover", visible=False, elem_id="thumbs")
                upload.upload(self.import_dataset, upload, [self.import_info, self.thumbs, self.dataset],
                              api_name="import_dataset")

                arch_in = gr.Dropdown(list(ARCHS), value=arch, label="Backbone", elem_id="arch")
                backbone_in = gr.Dropdown([(c.label, c.value) for c in backbones],
                                          value=catalog.backbone_for_arch(backbones, arch).value,
                                          label="Start from weights", allow_custom_value=True, elem_id="backbone")
                arch_in.input(self.backbone_for, arch_in, backbone_in, api_visibility="private")
                first_use = gr.Markdown(first_use_note(self.dataset.value, backbone_in.value, arch, settings),
                                        elem_id="first-use")
                gr.on([self.dataset.change, arch_in.change, backbone_in.change], self.first_use,
                      [self.dataset, backbone_in, arch_in], first_use, api_visibility="private", show_progress="hidden")
                # On a CPU fine-tuning costs 10-30 s an epoch on the tutorial's set (README, Speed)
                # while the fixed extractor caches its features once and then takes about a second:
                # default to what works. (ZeroGPU: the app process must not look at CUDA.)
                on_cpu = not on_zero_gpu() and pick_device().type == "cpu"
                mode_in = gr.Radio([(label, mode) for mode, label in views.MODE_LABELS.items()],
                                   value="fixed" if on_cpu else DEFAULTS.mode, label="Mode",
                                   info="On this CPU the fixed extractor takes seconds; fine-tuning takes "
                                        "~10–30 s per epoch on the ants/bees set (more on bigger sets)."
                                   if on_cpu else None, elem_id="mode")
                with gr.Accordion("Hyperparameters", open=True):
                    with gr.Row():
                        epochs_in = gr.Number(DEFAULTS.epochs, label="Epochs", precision=0, minimum=1, maximum=1000,
                                              elem_id="epochs")
                        batch_in = gr.Number(DEFAULTS.batch_size, label="Batch size", precision=0, minimum=1,
                                             maximum=512, elem_id="batch-size")
                    with gr.Row():
                        lr_in = gr.Number(DEFAULTS.lr, label="Learning rate", minimum=1e-7, maximum=10, step=0.0005,
                                          elem_id="lr")
                        momentum_in = gr.Number(DEFAULTS.momentum, label="Momentum", minimum=0, maximum=0.999,
                                                step=0.05, elem_id="momentum")
                    with gr.Row():
                        step_in = gr.Number(DEFAULTS.step_size, label="LR step size (epochs)", precision=0, minimum=1,
                                            maximum=1000, elem_id="step-size")
                        gamma_in = gr.Number(DEFAULTS.gamma, label="LR gamma", minimum=0.0001, maximum=1, step=0.05,
                                             elem_id="gamma")
                    frozen_in = gr.Number(DEFAULTS.frozen_epochs, label="Frozen epochs (progressive mode only: "
                                          "head-only epochs before unfreezing)", precision=0, minimum=1, maximum=1000,
                                          elem_id="frozen-epochs")
                gr.Markdown(device_note(jobs), elem_id="device")
                with gr.Row():
                    train_btn = gr.Button("Train", variant="primary", elem_id="train-btn")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
                self.notice = gr.Markdown(label="notice", elem_id="notice")
                cancel_btn.click(self.cancel, None, self.notice, api_name="cancel", concurrency_limit=None)
            with gr.Column(scale=2):
                self.status = gr.Markdown(views.status_markdown(None), label="status", elem_id="status")
                self.dataset_info = gr.Markdown(label="dataset", elem_id="dataset-info")
                self.curves = gr.Plot(label="curves", show_label=False, elem_id="curves")
                self.table = gr.Dataframe(views.history_table(None), label="Epochs (newest first)",
                                          interactive=False, max_height=300, elem_id="history")
                self.result = gr.Markdown(label="result", elem_id="result")
                self.grid = gr.Image(label="val_predictions", show_label=False, type="filepath", interactive=False,
                                     visible=False, elem_id="val-grid")
            self.seen = gr.State(-1)
            timer = gr.Timer(1.0)
            api = gr.Button(visible=False, elem_id="api-only")  # carries the API-only /train, /follow, /status

        job_view = [self.status, self.dataset_info, self.curves, self.table, self.result, self.grid, self.seen,
                    *models.outputs]
        self.job_view_outputs = job_view
        settings_in = [self.dataset, arch_in, mode_in, backbone_in, epochs_in, lr_in, momentum_in, batch_in, step_in,
                       gamma_in, frozen_in]
        # One writer of the job view per page: the timer. Its renders (a figure, ~0.2 s) must not
        # race another handler's: Gradio applies outputs in the order handlers finish, so a stream
        # that drew epoch 24 could be overwritten by a tick that started earlier with epoch 15.
        # trigger_mode="once": a page sends no tick while its previous one is pending, so ticks
        # run one after another and each draws a snapshot taken after the previous one's, and
        # the manager's versions only grow. The Train button only starts the job (and answers
        # with a notice); the next tick, within a second, draws it.
        timer.tick(self.tick, self.seen, job_view, api_visibility="private", concurrency_limit=None,
                   show_progress="hidden", trigger_mode="once")
        # "multiple": a second click reaches the server while the first one is pending and gets its
        # refusal; no concurrency limit, or it would queue behind a ZeroGPU run's held request.
        train_btn.click(self.start, settings_in, self.notice, api_visibility="private", concurrency_limit=None,
                        trigger_mode="multiple", show_progress="hidden")
        # API clients have no timer: /train and /follow stream the job view to them. These events
        # hang off a hidden button that no page shows, so they never write to a page.
        api.click(self.train, settings_in, [self.notice, *job_view], api_name="train", concurrency_limit=None,
                  trigger_mode="multiple", show_progress="hidden")
        api.click(self.follow, self.seen, job_view, api_name="follow", concurrency_limit=None, show_progress="hidden")
        # For API clients: the caller's job as it is now, at once.
        api.click(self.current, None, job_view, api_name="status", concurrency_limit=None, show_progress="hidden")

    def job_view(self, job: Job | None, visitor: Visitor) -> dict:
        """Everything the Train tab shows of `job`; a finished job also refreshes the model pickers."""
        shown = {self.status: views.status_markdown(job), self.dataset_info: views.dataset_markdown(job),
                 self.curves: views.training_figure(job), self.table: views.history_table(job),
                 self.result: views.result_markdown(job), self.grid: val_grid(job),
                 self.seen: job.version if job else 0}
        if job is not None and not job.active:
            shown.update(self.models.for_visitor(visitor))
        return shown

    def start(self, dataset, arch, mode, backbone, epochs, lr, momentum, batch_size, step_size, gamma, frozen_epochs,
              request: gr.Request, profile: gr.OAuthProfile | None):
        """The page's Train button: start the job and answer with a notice; the timer draws it.
        On ZeroGPU the run belongs to this request, so it is held open until the run ends."""
        visitor = self.visitors.of(request, profile)
        job, notice = self.submit(visitor, dataset, arch, mode, backbone, epochs, lr, momentum, batch_size,
                                  step_size, gamma, frozen_epochs)
        yield {self.notice: notice}
        if job is not None and self.jobs.request_bound:
            for _ in self.held(visitor, job):
                yield {}  # nothing to draw: the timer does

    def submit(self, visitor: Visitor, dataset, arch, mode, backbone, epochs, lr, momentum, batch_size, step_size,
               gamma, frozen_epochs) -> tuple[Job | None, str]:
        """(the job, "") or (None, why it was not started)."""
        try:
            if None in (epochs, lr, momentum, batch_size, step_size, gamma, frozen_epochs):
                raise UserError("every training setting needs a value")
            choice = catalog.find_dataset(self.settings, visitor, dataset)
            config = TrainConfig(data_dir=choice.path, arch=catalog.check_choice(arch, ARCHS, "backbone"),
                                 mode=catalog.check_choice(mode, MODES, "mode"), epochs=_number(int, epochs),
                                 lr=_number(float, lr), momentum=_number(float, momentum),
                                 batch_size=_number(int, batch_size), step_size=_number(int, step_size),
                                 gamma=_number(float, gamma), frozen_epochs=_number(int, frozen_epochs),
                                 backbone_weights=catalog.find_backbone(self.settings, backbone).weights,
                                 out_dir=str(catalog.checkpoint_folder(self.settings, visitor)))
            needs = choice.download_to or config.backbone_weights == "imagenet" and not imagenet_weights_cached(config.arch)
            job = self.jobs.submit(visitor.key, config,
                                   prepare=functools.partial(prepare_run, choice, config) if needs else None)
        except UserError as e:  # any other exception is a bug and keeps its traceback
            reason = e
            gr.Warning(f"Not started: {reason}")
            return None, f"⚠ **Not started:** {reason}"
        return job, ""

    def train(self, dataset, arch, mode, backbone, epochs, lr, momentum, batch_size, step_size, gamma, frozen_epochs,
              request: gr.Request, profile: gr.OAuthProfile | None):
        """/train for API clients: start the job, then stream its view until it is over."""
        visitor = self.visitors.of(request, profile)
        job, notice = self.submit(visitor, dataset, arch, mode, backbone, epochs, lr, momentum, batch_size,
                                  step_size, gamma, frozen_epochs)
        if job is None:
            yield {self.notice: notice}
            return
        yield {self.notice: "", **self.job_view(job, visitor)}
        for job in self.held(visitor, job):
            yield self.job_view(job, visitor)

    def held(self, visitor: Visitor, job: Job):
        """The job's changes until it is over. On ZeroGPU the run belongs to the request that
        started it: when that request goes away (the page closed, the client gone), Gradio closes
        this generator and the run is cancelled."""
        try:
            for job in self.jobs.follow(visitor.key, job.version):
                yield job
        finally:
            if self.jobs.request_bound and job.active:
                self.jobs.cancel(visitor.key)

    def follow(self, seen: int, request: gr.Request, profile: gr.OAuthProfile | None):
        visitor = self.visitors.of(request, profile)
        for job in self.jobs.follow(visitor.key, seen):
            yield self.job_view(job, visitor)

    def tick(self, seen: int, request: gr.Request, profile: gr.OAuthProfile | None):
        visitor = self.visitors.of(request, profile)
        job = self.jobs.latest(visitor.key)
        if (job.version if job else 0) != seen:
            return self.job_view(job, visitor)
        if job is not None and job.active:  # only the clock moved: redraw just the status line
            return {self.status: views.status_markdown(job)}
        return gr.skip()

    def current(self, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        visitor = self.visitors.of(request, profile)
        return self.job_view(self.jobs.latest(visitor.key), visitor)

    def cancel(self, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        if self.jobs.cancel(self.visitors.of(request, profile).key):
            return ("■ Cancel requested: a queued job leaves the queue; a running one stops after the current "
                    "batch and keeps its best checkpoint so far.")
        return "Nothing to cancel: you have no queued or running training job."

    def first_use(self, dataset: str, backbone: str, arch: str) -> str:
        return first_use_note(dataset, backbone, arch, self.settings)

    def backbone_for(self, arch: str) -> str:
        return catalog.backbone_for_arch(catalog.backbone_choices(self.settings), arch).value

    def dataset_picker(self, request: gr.Request, profile: gr.OAuthProfile | None,
                       selected: str | None = None) -> gr.Dropdown:
        """The visitor's dataset list read again; `selected`, or the default, chosen."""
        fresh = catalog.dataset_choices(self.settings, self.visitors.of(request, profile))
        return gr.Dropdown(choices=[(c.label, c.path) for c in fresh],
                           value=selected or catalog.default_dataset(fresh).path)

    def import_dataset(self, upload: str | None, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        if not upload:
            return {self.import_info: "", self.thumbs: gr.Gallery(visible=False)}
        try:
            report = import_zip(upload, catalog.upload_folder(self.settings, self.visitors.of(request, profile)))
        except UserError as e:  # the importer has removed everything it wrote
            return {self.import_info: f"⚠ **Not imported:** {e}. Nothing was kept.",
                    self.thumbs: gr.Gallery(None, visible=False)}
        return {self.import_info: views.import_markdown(report),
                self.thumbs: gr.Gallery(gallery_files(views.thumbnail_items(report)), visible=True),
                self.dataset: self.dataset_picker(request, profile, report.path)}


# -- Predict ---------------------------------------------------------------------------------------

def predictor_for(settings: Settings, visitor: Visitor, model: str) -> Predictor:
    """The model's Predictor, or a UserError saying what to do instead."""
    try:
        return catalog.load_predictor(catalog.check_checkpoint(settings, visitor, model))
    except UserError:
        if catalog.checkpoint_choices(settings, visitor):
            raise
        raise UserError(NO_MODEL) from None


def val_root(predictor: Predictor) -> str:
    """The model's dataset folder, or a UserError when its val images are not on this server."""
    root = predictor.checkpoint.meta.get("dataset", {}).get("root")
    if not root or not Path(root, "val").is_dir():
        raise UserError(f"This model's dataset ({root or 'unknown'}) is no longer on this server, "
                        "so there are no val images to use.")
    return root


class PredictTab:
    """A model and images to classify: a labelled gallery, the selected image's confidences, one row
    per file; or the model's predictions on random images of its val set."""

    def __init__(self, settings: Settings, visitors: Visitors, models: ModelPickers):
        self.settings, self.visitors = settings, visitors
        with gr.Tab("Predict", id="predict", elem_id="tab-predict"):
            with gr.Row():
                with gr.Column(scale=1, min_width=320):
                    models.predict.render()
                    with gr.Row():
                        models.note.render()
                        refresh_btn = gr.Button("Refresh list", size="sm", scale=0, min_width=110,
                                                elem_id="refresh-btn")
                    refresh_btn.click(models.refreshed, None, models.outputs, api_name="models")
                    files_in = gr.File(file_count="multiple", label="Images to classify (one or many)",
                                       elem_id="files")
                    self.problems = gr.Markdown(label="problems", elem_id="problems")
                    self.confidences = gr.Label(label="Confidence for the selected image", elem_id="confidences")
                    val_btn = gr.Button("Predictions on random val images", elem_id="val-btn")
                with gr.Column(scale=2):
                    self.gallery = gr.Gallery(label="Predictions", columns=4, height="auto", object_fit="contain",
                                              elem_id="gallery")
                    self.results = gr.Dataframe(views.predictions_table([]), label="Per file", interactive=False,
                                                max_height=300, elem_id="results")
                    val_samples = gr.Image(label="Random val images: predicted vs true", type="filepath",
                                           interactive=False, show_label=False, visible=False, elem_id="val-samples")
            self.probabilities = gr.State([])  # per readable image, for the gallery's select event

        shown = [self.gallery, self.confidences, self.problems, self.results, self.probabilities]
        files_in.change(self.predict, [models.predict, files_in], shown, api_name="predict",
                        concurrency_id="inference")
        models.predict.input(self.predict, [models.predict, files_in], shown, api_visibility="private",
                             concurrency_id="inference")
        self.gallery.select(self.select, self.probabilities, self.confidences, api_visibility="private")
        val_btn.click(self.random_val, models.predict, val_samples, api_name="random_val", concurrency_id="inference")

    def predict(self, model: str, files: list[str] | None, request: gr.Request,
                profile: gr.OAuthProfile | None) -> dict:
        if not files:
            return self.predictions([])
        try:
            predictor = predictor_for(self.settings, self.visitors.of(request, profile), model)
        except UserError as e:  # said next to the upload, rather than as an error badge on every output
            return {**self.predictions([]), self.problems: f"⚠ {e}"}
        return self.predictions(predictor.predict(files))

    def predictions(self, predictions) -> dict:
        readable = [p.probabilities for p in predictions if p.error is None]
        return {self.gallery: gallery_files(views.gallery_items(predictions)), self.confidences: readable[0] if readable else None,
                self.problems: views.problems_markdown(predictions),
                self.results: views.predictions_table(predictions), self.probabilities: readable}

    def select(self, probabilities: list[dict], evt: gr.SelectData) -> dict:
        return probabilities[evt.index]

    def random_val(self, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> gr.Image:
        try:
            predictor = predictor_for(self.settings, self.visitors.of(request, profile), model)
            root = val_root(predictor)
        except UserError as e:
            raise gr.Error(str(e).replace("**", "")) from None  # a toast shows no markdown
        figure = val_sample_figure(predictor, root, VAL_GRID_IMAGES)
        return gr.Image(image_file(views.figure_image(figure), "PNG"), visible=True)


# -- Evaluate & export -----------------------------------------------------------------------------

class EvaluateTab:
    """A model's card and curves; its evaluation on its val set (summary, confusion matrix, per-class
    numbers, mistakes); the checkpoint or its .pt2 export to download."""

    def __init__(self, settings: Settings, visitors: Visitors, models: ModelPickers):
        self.settings, self.visitors = settings, visitors
        with gr.Tab("Evaluate & export", id="evaluate", elem_id="tab-evaluate"), gr.Row():
            with gr.Column(scale=1, min_width=320):
                models.evaluate.render()
                self.model_card = gr.Markdown(NO_MODEL, label="model", elem_id="model-card")
                eval_btn = gr.Button("Evaluate on its val set", variant="primary", elem_id="eval-btn")
                gr.Markdown("**Take the model away**")
                with gr.Row():
                    download_btn = gr.Button("Download checkpoint", scale=3, elem_id="download-btn")
                    export_btn = gr.Button("Export (.pt2)", scale=2, elem_id="export-btn")
                self.model_file = gr.File(label="Model file", interactive=False, visible=False, elem_id="model-file")
                self.model_file_note = gr.Markdown(label="how to use it", elem_id="model-file-note")
            with gr.Column(scale=2):
                self.model_curves = gr.Plot(label="curves", show_label=False, visible=False, elem_id="model-curves")
                self.summary = gr.Markdown(label="evaluation", elem_id="eval-summary")
                with gr.Row():
                    self.confusion = gr.Plot(label="confusion", show_label=False, visible=False, elem_id="confusion")
                    self.per_class = gr.Dataframe(headers=views.PER_CLASS_COLUMNS, label="Per class",
                                                  interactive=False, visible=False, elem_id="per-class")
                self.mistakes = gr.Gallery(label="Mistakes, worst first", columns=3, object_fit="contain",
                                           visible=False, elem_id="mistakes")

        evaluation = [self.summary, self.confusion, self.per_class, self.mistakes]
        takeaway = [self.model_file, self.model_file_note]
        models.evaluate.change(self.show_model, models.evaluate, [self.model_card, self.model_curves, *evaluation,
                                                                  *takeaway], api_name="model_info")
        eval_btn.click(self.evaluate, models.evaluate, evaluation, api_name="evaluate", concurrency_id="inference")
        download_btn.click(self.download, models.evaluate, takeaway, api_name="download_checkpoint")
        export_btn.click(self.export, models.evaluate, takeaway, api_name="export", concurrency_id="inference")

    def show_model(self, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        """The model's card and curves; what was shown for the previous model is cleared."""
        visitor = self.visitors.of(request, profile)
        cleared = {**self.no_evaluation(""), self.model_file: gr.File(None, visible=False), self.model_file_note: ""}
        try:
            meta = load_checkpoint(catalog.check_checkpoint(self.settings, visitor, model)).meta
        except UserError as e:
            card = f"⚠ {e}" if catalog.checkpoint_choices(self.settings, visitor) else NO_MODEL
            return {self.model_card: card, self.model_curves: gr.Plot(None, visible=False), **cleared}
        return {self.model_card: views.model_markdown(meta),
                self.model_curves: gr.Plot(views.checkpoint_figure(meta), visible=True), **cleared}

    def no_evaluation(self, summary: str) -> dict:
        return {self.summary: summary, self.confusion: gr.Plot(None, visible=False),
                self.per_class: gr.Dataframe(visible=False), self.mistakes: gr.Gallery(None, visible=False)}

    def evaluate(self, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        try:
            predictor = predictor_for(self.settings, self.visitors.of(request, profile), model)
            evaluation = predictor.evaluate(val_root(predictor), "val")
        except UserError as e:  # no such model, its dataset gone or changed
            return self.no_evaluation(f"⚠ {e}")
        mistakes = gallery_files(views.mistake_items(evaluation))
        return {self.summary: views.evaluation_markdown(evaluation, predictor.checkpoint.meta),
                self.confusion: gr.Plot(views.confusion_figure(evaluation), visible=True),
                self.per_class: gr.Dataframe(views.per_class_table(evaluation), visible=True),
                self.mistakes: gr.Gallery(mistakes, visible=bool(mistakes))}

    def download(self, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        return self.takeaway(model, catalog.check_checkpoint, self.visitors.of(request, profile))

    def export(self, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        return self.takeaway(model, catalog.exported_program, self.visitors.of(request, profile))

    def takeaway(self, model: str, fetch, visitor: Visitor) -> dict:
        """`fetch(settings, visitor, checkpoint)`'s file to download, with how to use it."""
        try:
            checkpoint = catalog.check_checkpoint(self.settings, visitor, model)
            path = fetch(self.settings, visitor, checkpoint)
        except UserError as e:
            raise gr.Error(str(e)) from None
        # Handed over as a copy: the weights folder itself is never served by URL.
        return {self.model_file: gr.File(catalog.download_copy(path), visible=True),
                self.model_file_note: views.takeaway_markdown(path, load_checkpoint(checkpoint).meta)}
