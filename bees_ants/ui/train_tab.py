"""The Train tab: dataset, backbone, mode and hyperparameters; Train and Cancel; the job view."""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from .. import catalog
from ..catalog import Settings
from ..checkpoint import CheckpointError
from ..config import ARCHS, MODE_DEFAULTS, MODE_LABELS, MODES, TrainConfig, recipe
from ..data import DatasetDownloadError
from ..device import describe_device, pick_device
from ..errors import UserError
from ..figures import figure_image
from ..importer import import_zip
from ..jobs import Job, JobManager
from ..models import WeightsDownloadError, fetch_imagenet_weights, imagenet_weights_cached
from ..predict import val_sample_figure
from ..resume import resume_config, resume_path
from ..stats import STOP_METRIC_TEXT, STOP_METRICS
from ..views.datasets import THUMBNAILS_SHOWN, UPLOAD_HELP, import_markdown, thumbnail_items
from ..views.training import dataset_markdown, history_table, result_markdown, status_markdown, training_curves
from ..visitors import Visitor
from ..zerogpu import max_gpu_seconds, on_zero_gpu
from .common import VAL_GRID_IMAGES, ModelPickers, Visitors, gallery_files, image_file
from .dataset_builder import DatasetBuilder

# The page's timer ticks every second while the visitor has a queued or running job, and slowly
# otherwise: an idle page costs a request every IDLE_TICK_S, yet still notices, within that, a run
# started from another tab of the same browser.
ACTIVE_TICK_S, IDLE_TICK_S = 1.0, 20.0


@functools.lru_cache(maxsize=64)
def _val_grid(checkpoint: str, mtime: float, data_dir: str, seed: int) -> str:
    # One grid file per finished run, drawn once and served to every page of its visitor
    # (mtime: the final save).
    figure = val_sample_figure(catalog.load_predictor(checkpoint), data_dir, VAL_GRID_IMAGES, seed)
    return image_file(figure_image(figure), "PNG")


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


@dataclass(frozen=True)
class Hyperparameter:
    """A TrainConfig field the form shows, and how: a number box, or a radio when it has `choices`."""
    name: str  # the TrainConfig field, and /train's parameter
    label: str
    row: int  # the form's row: fields with the same row sit side by side, rows in their order
    type: type = float  # int or float; str for a choice
    minimum: float | None = None
    maximum: float | None = None
    step: float = 1
    info: str | None = None
    choices: tuple[tuple[str, str], ...] = ()  # (label, value)

    def widget(self, value) -> gr.Component:
        elem_id = self.name.replace("_", "-")
        if self.choices:
            return gr.Radio(list(self.choices), value=value, label=self.label, elem_id=elem_id)
        return gr.Number(value, label=self.label, info=self.info, precision=0 if self.type is int else None,
                         minimum=self.minimum, maximum=self.maximum, step=self.step, elem_id=elem_id)

    def parse(self, value):
        """The setting from what a page or an API client sent; odd values refused as advice."""
        if self.choices:
            return catalog.check_choice(value, [v for _, v in self.choices], self.name)
        try:
            return self.type(value)
        except (TypeError, ValueError, OverflowError):
            raise UserError("every training setting needs a number") from None


# The hyperparameters on the form, in the order /train takes them after dataset, arch, mode and
# backbone (FORM). API clients pass them by position too: add new ones at the end, never reorder.
HYPERPARAMETERS = (
    Hyperparameter("epochs", "Epochs", row=0, type=int, minimum=1, maximum=1000),
    Hyperparameter("lr", "Learning rate", row=1, minimum=1e-7, maximum=10, step=0.0005,
                   info="of the new head; fine-tuning trains the pretrained layers at a tenth of it"),
    Hyperparameter("momentum", "Momentum", row=1, minimum=0, maximum=0.999, step=0.05),
    Hyperparameter("batch_size", "Batch size", row=0, type=int, minimum=1, maximum=512),
    Hyperparameter("step_size", "LR step size (epochs)", row=2, type=int, minimum=1, maximum=1000),
    Hyperparameter("gamma", "LR gamma", row=2, minimum=0.0001, maximum=1, step=0.05),
    Hyperparameter("frozen_epochs", "Frozen epochs (progressive mode only: head-only epochs before unfreezing)",
                   row=3, type=int, minimum=1, maximum=1000),
    Hyperparameter("optimizer", "Optimizer", row=4, type=str, choices=(("SGD", "sgd"), ("AdamW", "adamw"))),
    Hyperparameter("train_blocks", "Train only the last blocks (0: all)", row=5, type=int, minimum=0, maximum=100,
                   info="fine-tune/progressive: the blocks before them are frozen and run once per cached view, "
                        "several times faster"),
    Hyperparameter("patience", "Patience (0: off)", row=4, type=int, minimum=0, maximum=1000,
                   info="early stopping: epochs without a better val score"),
    Hyperparameter("stop_metric", "Patience and the best model watch", row=6, type=str,
                   choices=tuple((STOP_METRIC_TEXT[m], m) for m in STOP_METRICS)),
    Hyperparameter("lr_schedule", "LR schedule", row=2, type=str,
                   choices=(("step (step size, gamma)", "step"), ("cosine (down to 0 over the epochs)", "cosine"))),
)
# The form's values, in /train's (and the Train button's) order; each names a /train parameter.
FORM = ("dataset", "arch", "mode", "backbone", *(h.name for h in HYPERPARAMETERS))


def form_values_from(config: TrainConfig) -> dict:
    """What the form shows for `config`, by FORM name."""
    return {"dataset": config.data_dir, "arch": config.arch, "mode": config.mode,
            "backbone": "none" if config.backbone_weights is None else config.backbone_weights,
            **{h.name: getattr(config, h.name) for h in HYPERPARAMETERS}}


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
        # On a CPU the form starts in fixed mode (config.default_mode). (ZeroGPU: the app process
        # must not look at CUDA.)
        on_cpu = not on_zero_gpu() and pick_device().type == "cpu"
        self.form: dict[str, gr.Component] = {}  # the form's widgets by FORM name
        with gr.Tab("Train", id="train", elem_id="tab-train"), gr.Row():
            with gr.Column(scale=1, min_width=320):
                installed = self.dataset_section()
                installed = self.backbone_section(installed)
                self.recipe_section(installed, on_cpu)
                train_btn, cancel_btn = self.buttons_section()
            with gr.Column(scale=2):
                self.job_view_section()
            self.seen = gr.State(-1)
            # The checkpoint of the visitor's latest run when it can resume: what the Resume button
            # sends. A hidden textbox rather than a State, so /resume takes a path from API clients too.
            self.resumable = gr.Textbox(visible=False, elem_id="resumable")
            self.timer = gr.Timer(ACTIVE_TICK_S)  # the first tick draws the job, then sets the pace
            api = gr.Button(visible=False, elem_id="api-only")  # carries the API-only /train, /follow, /status
        self.form = {name: self.form[name] for name in FORM}  # /train's order
        self.job_view_outputs = [self.status, self.dataset_info, self.curves, self.table, self.result, self.grid,
                                 self.seen, self.resume_btn, self.resumable, *models.outputs]
        self.wire_jobs(train_btn, cancel_btn, api)

    # -- layout: the form (left column) ----------------------------------------------------------

    def dataset_section(self) -> dict:
        """The dataset picker, a zip upload and the dataset builder; the default dataset, as a
        TrainConfig setting."""
        datasets = catalog.dataset_choices(self.settings, None)
        self.dataset = self.form["dataset"] = gr.Dropdown(
            [(c.label, c.path) for c in datasets], label="Dataset", value=catalog.default_dataset(datasets).path,
            allow_custom_value=True, elem_id="dataset")
        with gr.Accordion("Add your own dataset (.zip)", open=False, elem_id="own-data"):
            gr.Markdown(UPLOAD_HELP)
            upload = gr.File(file_types=[".zip"], label="Dataset zip", height=100, elem_id="upload")
            self.import_info = gr.Markdown(label="import", elem_id="import-info")
            self.thumbs = gr.Gallery(label="A few training images per class", columns=THUMBNAILS_SHOWN,
                                     object_fit="cover", visible=False, elem_id="thumbs")
            delete_btn = gr.Button("Delete the selected dataset (yours only)", size="sm",
                                   variant="stop", elem_id="delete-dataset-btn")
            self.deleted = gr.Markdown(label="deleted", elem_id="dataset-deleted")
        # The progress shows on the upload box: checking a big zip takes seconds.
        upload.upload(self.import_dataset, upload, [self.import_info, self.thumbs, self.dataset],
                      api_name="import_dataset", show_progress_on=[upload, self.import_info])
        delete_btn.click(self.delete_dataset, self.dataset, [self.deleted, self.dataset], api_name="delete_dataset")
        DatasetBuilder(self.settings, self.visitors, self.dataset, self.dataset_picker)
        return {"data_dir": self.dataset.value}

    def backbone_section(self, installed: dict) -> dict:
        """Backbone and starting weights, and what the first run will download; `installed` plus
        the default backbone (a local weights file's, else resnet18) and its weights."""
        backbones = catalog.backbone_choices(self.settings)
        arch = catalog.default_arch(backbones)
        weights = catalog.backbone_for_arch(backbones, arch)
        self.form["arch"] = gr.Dropdown(list(ARCHS), value=arch, label="Backbone", elem_id="arch")
        self.form["backbone"] = gr.Dropdown([(c.label, c.value) for c in backbones], value=weights.value,
                                            label="Start from weights", allow_custom_value=True, elem_id="backbone")
        # Another backbone starts from its own default weights. The choices are fixed when the page is
        # built, so the browser switches them itself, at once: a server's reply could land after,
        # and undo, a pick of weights made meanwhile (seen under load).
        defaults = {a: catalog.backbone_for_arch(backbones, a).value for a in ARCHS}
        self.form["arch"].input(None, self.form["arch"], self.form["backbone"],
                                js=f"(arch) => ({json.dumps(defaults)})[arch]")
        first_use = gr.Markdown(first_use_note(self.dataset.value, weights.value, arch, self.settings),
                                elem_id="first-use")
        gr.on([self.dataset.change, self.form["arch"].change, self.form["backbone"].change], self.first_use,
              [self.dataset, self.form["backbone"], self.form["arch"]], first_use, api_visibility="private",
              show_progress="hidden")
        return {**installed, "arch": arch, "backbone_weights": weights.weights}

    def recipe_section(self, installed: dict, on_cpu: bool) -> None:
        """Mode and hyperparameters, showing what config.recipe makes of the `installed` defaults
        (the default dataset, backbone and weights) on this device."""
        shown = form_values_from(recipe({}, on_cpu=on_cpu, defaults=installed))
        self.form["mode"] = gr.Radio([(label, mode) for mode, label in MODE_LABELS.items()],
                                     value=shown["mode"], label="Mode", elem_id="mode",
                                     info="On this CPU the fixed extractor takes seconds; fine-tuning takes "
                                          "~10–30 s per epoch on the ants/bees set (more on bigger sets)."
                                     if on_cpu else None)
        with gr.Accordion("Hyperparameters", open=True):
            for row in sorted({h.row for h in HYPERPARAMETERS}):
                with gr.Row():
                    for h in HYPERPARAMETERS:
                        if h.row == row:
                            self.form[h.name] = h.widget(shown[h.name])
        # Each mode starts from its own defaults (config.MODE_DEFAULTS) for the fields the form
        # shows: picking one sets them, in the browser (no round trip that could land after the
        # visitor typed a rate).
        follows_mode = [name for name in FORM if any(name in d for d in MODE_DEFAULTS.values())]
        per_mode = {m: [form_values_from(recipe({"mode": m}, defaults=installed))[name] for name in follows_mode]
                    for m in MODES}
        self.form["mode"].input(None, self.form["mode"], [self.form[name] for name in follows_mode],
                                js=f"(mode) => ({json.dumps(per_mode)})[mode]", api_visibility="private")

    def buttons_section(self) -> tuple[gr.Button, gr.Button]:
        gr.Markdown(device_note(self.jobs), elem_id="device")
        with gr.Row():
            train_btn = gr.Button("Train", variant="primary", elem_id="train-btn")
            self.resume_btn = gr.Button("Resume", visible=False, elem_id="resume-btn")
            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
        self.notice = gr.Markdown(label="notice", elem_id="notice")
        return train_btn, cancel_btn

    # -- layout: the job view (right column) -----------------------------------------------------

    def job_view_section(self) -> None:
        self.status = gr.Markdown(status_markdown(None), label="status", elem_id="status")
        self.dataset_info = gr.Markdown(label="dataset", elem_id="dataset-info")
        self.curves = gr.HTML(training_curves(None), label="curves", elem_id="curves")
        self.table = gr.Dataframe(history_table(None), label="Epochs (newest first)",
                                  interactive=False, max_height=300, elem_id="history")
        self.result = gr.Markdown(label="result", elem_id="result")
        self.grid = gr.Image(label="val_predictions", show_label=False, type="filepath", interactive=False,
                             visible=False, alt_text="Val images with the best model's predicted and true "
                             "classes (mistakes in red)", elem_id="val-grid")

    # -- wiring: jobs ----------------------------------------------------------------------------

    def wire_jobs(self, train_btn: gr.Button, cancel_btn: gr.Button, api: gr.Button) -> None:
        job_view = self.job_view_outputs
        cancel_btn.click(self.cancel, None, self.notice, api_name="cancel", concurrency_limit=None)
        # One writer of the job view per page: the timer. Its renders must not race another
        # handler's: Gradio applies outputs in the order handlers finish, so a stream that drew
        # epoch 24 could be overwritten by a tick that started earlier with epoch 15.
        # trigger_mode="once": a page sends no tick while its previous one is pending, so ticks
        # run one after another and each draws a snapshot taken after the previous one's, and
        # the manager's versions only grow. The Train button only starts the job (and answers
        # with a notice, and sets the timer to its fast pace); the next tick, within a second, draws it.
        self.timer.tick(self.tick, self.seen, [*job_view, self.timer], api_visibility="private",
                        concurrency_limit=None, show_progress="hidden", trigger_mode="once")
        # The form's values reach start and train by name (FORM), which are /train's parameter names.
        # "multiple": a second click reaches the server while the first one is pending and gets its
        # refusal; no concurrency limit, or it would queue behind a ZeroGPU run's held request.
        train_btn.click(self.start, inputs_kwargs=self.form, outputs=[self.notice, self.timer],
                        api_visibility="private", concurrency_limit=None, trigger_mode="multiple",
                        show_progress="hidden")
        # API clients have no timer: /train and /follow stream the job view to them. These events
        # hang off a hidden button that no page shows, so they never write to a page.
        api.click(self.train, inputs_kwargs=self.form, outputs=[self.notice, *job_view], api_name="train",
                  concurrency_limit=None, trigger_mode="multiple", show_progress="hidden")
        api.click(self.follow, self.seen, job_view, api_name="follow", concurrency_limit=None, show_progress="hidden")
        # The page's Resume button and API clients: continue one of the caller's own stopped runs.
        self.resume_btn.click(self.resume, self.resumable, [self.notice, self.timer], api_name="resume",
                              concurrency_limit=None, show_progress="hidden")
        # For API clients: the caller's job as it is now, at once.
        api.click(self.current, None, job_view, api_name="status", concurrency_limit=None, show_progress="hidden")

    def job_view(self, job: Job | None, visitor: Visitor, grid: bool = True) -> dict:
        """Everything the Train tab shows of `job`; a finished job also refreshes the model pickers.
        grid=False: all but the val predictions grid, which takes seconds to draw for a new run."""
        shown = {self.status: status_markdown(job), self.dataset_info: dataset_markdown(job),
                 self.curves: training_curves(job), self.table: history_table(job),
                 self.result: result_markdown(job), self.seen: job.version if job else 0,
                 **({self.grid: val_grid(job)} if grid else {})}
        resumable = job is not None and not job.active and job.checkpoint_path and resume_path(job.checkpoint_path).is_file()
        shown.update({self.resume_btn: gr.Button(visible=bool(resumable)),
                      self.resumable: job.checkpoint_path if resumable else ""})
        if job is not None and not job.active:
            shown.update(self.models.for_visitor(visitor))
        return shown

    def start(self, request: gr.Request, profile: gr.OAuthProfile | None, **form):
        """The page's Train button: start the job and answer with a notice; the timer draws it.
        On ZeroGPU the run belongs to this request, so it is held open until the run ends."""
        visitor = self.visitors.of(request, profile)
        job, notice = self.submit(visitor, form)
        yield {self.notice: notice, **({self.timer: gr.Timer(ACTIVE_TICK_S)} if job is not None else {})}
        if job is not None and self.jobs.request_bound:
            for _ in self.held(visitor, job):
                yield {}  # nothing to draw: the timer does

    def submit(self, visitor: Visitor, form: dict) -> tuple[Job | None, str]:
        """(the job, "") or (None, why it was not started); `form`: values by FORM name."""
        try:
            choice, config = self.form_config(visitor, form)
            needs = choice.download_to or config.backbone_weights == "imagenet" and not imagenet_weights_cached(config.arch)
            job = self.jobs.submit(visitor.key, config,
                                   prepare=functools.partial(prepare_run, choice, config) if needs else None,
                                   source=visitor.source, signed_in=visitor.signed_in)
        except UserError as e:  # any other exception is a bug and keeps its traceback
            reason = e
            gr.Warning(f"Not started: {reason}")
            return None, f"⚠ **Not started:** {reason}"
        return job, ""

    def form_config(self, visitor: Visitor, form: dict) -> tuple[catalog.DatasetChoice, TrainConfig]:
        """The dataset and the TrainConfig the form's values ask for, each one checked against what
        the catalog offers `visitor`; settings the form does not show come from config.recipe."""
        if any(form.get(h.name) is None for h in HYPERPARAMETERS if not h.choices):
            raise UserError("every training setting needs a value")
        choice = catalog.find_dataset(self.settings, visitor, form["dataset"])
        given = {"data_dir": choice.path, "mode": catalog.check_choice(form["mode"], MODES, "mode"),
                 "arch": catalog.check_choice(form["arch"], ARCHS, "backbone"),
                 **{h.name: h.parse(form[h.name]) for h in HYPERPARAMETERS},
                 "backbone_weights": catalog.find_backbone(self.settings, form["backbone"]).weights}
        return choice, recipe(given, defaults={"out_dir": str(catalog.room_for_model(self.settings, visitor)),
                                               "image_size": self.settings.image_size})

    def train(self, request: gr.Request, profile: gr.OAuthProfile | None, **form):
        """/train for API clients: start the job, then stream its view until it is over."""
        visitor = self.visitors.of(request, profile)
        job, notice = self.submit(visitor, form)
        if job is None:
            yield {self.notice: notice}
            return
        yield {self.notice: "", **self.job_view(job, visitor)}
        for job in self.held(visitor, job):
            yield self.job_view(job, visitor)

    def resume(self, checkpoint, request: gr.Request, profile: gr.OAuthProfile | None):
        """Continue one of the visitor's own stopped runs from its resume state, through the same
        queue as a new run. The page's timer draws it, as after Train."""
        visitor = self.visitors.of(request, profile)
        try:
            path = catalog.resumable_checkpoint(self.settings, visitor, checkpoint)
            config = resume_config(path)
            catalog.find_dataset(self.settings, visitor, config.data_dir)  # still one the visitor may use
            job = self.jobs.submit(visitor.key, config, source=visitor.source, signed_in=visitor.signed_in)
        except UserError as e:
            gr.Warning(f"Not resumed: {e}")
            yield {self.notice: f"⚠ **Not resumed:** {e}"}
            return
        yield {self.notice: "▶ Resuming: the run continues after its last finished epoch.",
               self.timer: gr.Timer(ACTIVE_TICK_S)}
        if self.jobs.request_bound:
            for _ in self.held(visitor, job):
                yield {}

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
        """The job view if the job changed since the page drew version `seen`, with the timer's pace
        for what the job is now; the status line alone while it runs (the clock moved); else nothing."""
        visitor = self.visitors.of(request, profile)
        job = self.jobs.latest(visitor.key)
        if (job.version if job else 0) != seen:
            active = job is not None and job.active
            # "Finished" shows at once; the val predictions grid follows when drawn (seconds, once a run).
            yield {**self.job_view(job, visitor, grid=active),
                   self.timer: gr.Timer(ACTIVE_TICK_S if active else IDLE_TICK_S)}
            if not active:
                yield {self.grid: val_grid(job)}
        elif job is not None and job.active:  # only the clock moved: redraw just the status line
            yield {self.status: status_markdown(job)}
        else:
            yield gr.skip()

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

    def dataset_picker(self, request: gr.Request, profile: gr.OAuthProfile | None,
                       selected: str | None = None) -> gr.Dropdown:
        """The visitor's dataset list read again; `selected` chosen, else the one their latest run
        used, their newest or the default (catalog.opening_dataset)."""
        visitor = self.visitors.of(request, profile)
        fresh = catalog.dataset_choices(self.settings, visitor)
        job = self.jobs.latest(visitor.key)
        opening = catalog.opening_dataset(self.settings, visitor, fresh, job.config.data_dir if job else None)
        return gr.Dropdown(choices=[(c.label, c.path) for c in fresh], value=selected or opening.path)

    def restored_form(self, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        """On page load: the form as the visitor's latest run had it (the status beside it shows
        that run), and their dataset list read again; the defaults when they have no run."""
        shown = {self.dataset: self.dataset_picker(request, profile)}
        job = self.jobs.latest(self.visitors.of(request, profile).key)
        if job is not None:
            values = form_values_from(job.config)
            backbones = catalog.backbone_choices(self.settings)
            if values["backbone"] not in [c.value for c in backbones]:  # its weights file is gone since
                values["backbone"] = catalog.backbone_for_arch(backbones, values["arch"]).value
            shown.update({self.form[name]: values[name] for name in FORM if name != "dataset"})
        return shown

    def delete_dataset(self, dataset, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        """The visitor's own dataset removed (not while their run uses it); the list read again."""
        visitor = self.visitors.of(request, profile)
        job = self.jobs.latest(visitor.key)
        try:
            name = catalog.delete_dataset(self.settings, visitor, dataset,
                                          in_use=(job.config.data_dir,) if job is not None and job.active else ())
        except UserError as e:
            return {self.deleted: f"⚠ {e}"}
        return {self.deleted: f"Deleted **{name}**.", self.dataset: self.dataset_picker(request, profile)}

    def import_dataset(self, upload: str | None, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        if not upload:
            return {self.import_info: "", self.thumbs: gr.Gallery(visible=False)}
        try:
            folder = catalog.room_for_dataset(self.settings, self.visitors.of(request, profile), os.path.getsize(upload))
            report = import_zip(upload, folder)
        except UserError as e:  # the importer has removed everything it wrote
            return {self.import_info: f"⚠ **Not imported:** {e}. Nothing was kept.",
                    self.thumbs: gr.Gallery(None, visible=False)}
        finally:  # the uploaded zip (up to 500 MB in Gradio's cache) has served its purpose
            if Path(upload).resolve().is_relative_to(Path(gr.utils.get_upload_folder()).resolve()):
                Path(upload).unlink(missing_ok=True)
        return {self.import_info: import_markdown(report),
                self.thumbs: gr.Gallery(gallery_files(thumbnail_items(report)), visible=True),
                self.dataset: self.dataset_picker(request, profile, report.path)}
