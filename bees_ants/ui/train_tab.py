"""The Train tab: dataset, backbone, mode and hyperparameters; Train and Cancel; the job view."""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import gradio as gr

from .. import catalog, views
from ..catalog import Settings
from ..checkpoint import CheckpointError
from ..config import ARCHS, MODES, OPTIMIZERS, TrainConfig, for_mode
from ..data import DatasetDownloadError
from ..device import describe_device, pick_device
from ..errors import UserError
from ..importer import import_zip
from ..jobs import Job, JobManager
from ..models import WeightsDownloadError, fetch_imagenet_weights, imagenet_weights_cached
from ..predict import val_sample_figure
from ..stats import STOP_METRIC_TEXT, STOP_METRICS
from ..train import resume_config, resume_path
from ..visitors import Visitor
from ..zerogpu import max_gpu_seconds, on_zero_gpu
from .common import VAL_GRID_IMAGES, ModelPickers, Visitors, gallery_files, image_file
from .dataset_builder import DatasetBuilder

DEFAULTS = TrainConfig(data_dir="")
# The page's timer ticks every second while the visitor has a queued or running job, and slowly
# otherwise: an idle page costs a request every IDLE_TICK_S, yet still notices, within that, a run
# started from another tab of the same browser.
ACTIVE_TICK_S, IDLE_TICK_S = 1.0, 20.0


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
                DatasetBuilder(settings, visitors, self.dataset, self.dataset_picker)

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
                        lr_in = gr.Number(for_mode(DEFAULTS, mode_in.value).lr, label="Learning rate",
                                          info="of the new head; fine-tuning trains the pretrained layers at a "
                                               "tenth of it", minimum=1e-7, maximum=10, step=0.0005, elem_id="lr")
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
                    with gr.Row():
                        optimizer_in = gr.Radio([("SGD", "sgd"), ("AdamW", "adamw")], value=DEFAULTS.optimizer,
                                                label="Optimizer", elem_id="optimizer")
                        patience_in = gr.Number(for_mode(DEFAULTS, mode_in.value).patience, label="Patience (0: off)",
                                                info="early stopping: epochs without a better val score",
                                                precision=0, minimum=0, maximum=1000, elem_id="patience")
                        # cv branch: one more field, added plainly (the form's list of fields is being restructured)
                        stop_metric_in = gr.Radio([(STOP_METRIC_TEXT[m], m) for m in STOP_METRICS],
                                                  value=DEFAULTS.stop_metric, label="Patience and best model watch",
                                                  elem_id="stop-metric")
                    blocks_in = gr.Number(DEFAULTS.train_blocks, label="Train only the last blocks (0: all)",
                                          info="fine-tune/progressive: the blocks before them are frozen and run "
                                               "once per cached view, several times faster", precision=0, minimum=0,
                                          maximum=100, elem_id="train-blocks")
                gr.Markdown(device_note(jobs), elem_id="device")
                with gr.Row():
                    train_btn = gr.Button("Train", variant="primary", elem_id="train-btn")
                    self.resume_btn = gr.Button("Resume", visible=False, elem_id="resume-btn")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
                self.notice = gr.Markdown(label="notice", elem_id="notice")
                cancel_btn.click(self.cancel, None, self.notice, api_name="cancel", concurrency_limit=None)
            with gr.Column(scale=2):
                self.status = gr.Markdown(views.status_markdown(None), label="status", elem_id="status")
                self.dataset_info = gr.Markdown(label="dataset", elem_id="dataset-info")
                self.curves = gr.HTML(views.training_curves(None), label="curves", elem_id="curves")
                self.table = gr.Dataframe(views.history_table(None), label="Epochs (newest first)",
                                          interactive=False, max_height=300, elem_id="history")
                self.result = gr.Markdown(label="result", elem_id="result")
                self.grid = gr.Image(label="val_predictions", show_label=False, type="filepath", interactive=False,
                                     visible=False, elem_id="val-grid")
            self.seen = gr.State(-1)
            # The checkpoint of the visitor's latest run when it can resume: what the Resume button
            # sends. A hidden textbox rather than a State, so /resume takes a path from API clients too.
            self.resumable = gr.Textbox(visible=False, elem_id="resumable")
            self.timer = gr.Timer(ACTIVE_TICK_S)  # the first tick draws the job, then sets the pace
            api = gr.Button(visible=False, elem_id="api-only")  # carries the API-only /train, /follow, /status

        job_view = [self.status, self.dataset_info, self.curves, self.table, self.result, self.grid, self.seen,
                    self.resume_btn, self.resumable, *models.outputs]
        self.job_view_outputs = job_view
        # Each mode starts from its own learning rate and patience (config.MODE_DEFAULTS): picking one
        # sets them, in the browser (no round trip that could land after the visitor typed a rate).
        defaults = {m: [for_mode(DEFAULTS, m).lr, for_mode(DEFAULTS, m).patience] for m in MODES}
        mode_in.input(None, mode_in, [lr_in, patience_in], js=f"(mode) => ({json.dumps(defaults)})[mode]",
                      api_visibility="private")
        settings_in = [self.dataset, arch_in, mode_in, backbone_in, epochs_in, lr_in, momentum_in, batch_in, step_in,
                       gamma_in, frozen_in, optimizer_in, blocks_in, patience_in, stop_metric_in]
        # One writer of the job view per page: the timer. Its renders must not race another
        # handler's: Gradio applies outputs in the order handlers finish, so a stream that drew
        # epoch 24 could be overwritten by a tick that started earlier with epoch 15.
        # trigger_mode="once": a page sends no tick while its previous one is pending, so ticks
        # run one after another and each draws a snapshot taken after the previous one's, and
        # the manager's versions only grow. The Train button only starts the job (and answers
        # with a notice, and sets the timer to its fast pace); the next tick, within a second, draws it.
        self.timer.tick(self.tick, self.seen, [*job_view, self.timer], api_visibility="private",
                        concurrency_limit=None, show_progress="hidden", trigger_mode="once")
        # "multiple": a second click reaches the server while the first one is pending and gets its
        # refusal; no concurrency limit, or it would queue behind a ZeroGPU run's held request.
        train_btn.click(self.start, settings_in, [self.notice, self.timer], api_visibility="private",
                        concurrency_limit=None, trigger_mode="multiple", show_progress="hidden")
        # API clients have no timer: /train and /follow stream the job view to them. These events
        # hang off a hidden button that no page shows, so they never write to a page.
        api.click(self.train, settings_in, [self.notice, *job_view], api_name="train", concurrency_limit=None,
                  trigger_mode="multiple", show_progress="hidden")
        api.click(self.follow, self.seen, job_view, api_name="follow", concurrency_limit=None, show_progress="hidden")
        # The page's Resume button and API clients: continue one of the caller's own stopped runs.
        self.resume_btn.click(self.resume, self.resumable, [self.notice, self.timer], api_name="resume", concurrency_limit=None,
                              show_progress="hidden")
        # For API clients: the caller's job as it is now, at once.
        api.click(self.current, None, job_view, api_name="status", concurrency_limit=None, show_progress="hidden")

    def job_view(self, job: Job | None, visitor: Visitor) -> dict:
        """Everything the Train tab shows of `job`; a finished job also refreshes the model pickers."""
        shown = {self.status: views.status_markdown(job), self.dataset_info: views.dataset_markdown(job),
                 self.curves: views.training_curves(job), self.table: views.history_table(job),
                 self.result: views.result_markdown(job), self.grid: val_grid(job),
                 self.seen: job.version if job else 0}
        resumable = job is not None and not job.active and job.checkpoint_path and resume_path(job.checkpoint_path).is_file()
        shown.update({self.resume_btn: gr.Button(visible=bool(resumable)),
                      self.resumable: job.checkpoint_path if resumable else ""})
        if job is not None and not job.active:
            shown.update(self.models.for_visitor(visitor))
        return shown

    def start(self, dataset, arch, mode, backbone, epochs, lr, momentum, batch_size, step_size, gamma, frozen_epochs,
              optimizer, train_blocks, patience, stop_metric="val_acc", request: gr.Request = None,
              profile: gr.OAuthProfile | None = None):
        """The page's Train button: start the job and answer with a notice; the timer draws it.
        On ZeroGPU the run belongs to this request, so it is held open until the run ends."""
        visitor = self.visitors.of(request, profile)
        job, notice = self.submit(visitor, dataset, arch, mode, backbone, epochs, lr, momentum, batch_size,
                                  step_size, gamma, frozen_epochs, optimizer, train_blocks, patience, stop_metric)
        yield {self.notice: notice, **({self.timer: gr.Timer(ACTIVE_TICK_S)} if job is not None else {})}
        if job is not None and self.jobs.request_bound:
            for _ in self.held(visitor, job):
                yield {}  # nothing to draw: the timer does

    def submit(self, visitor: Visitor, dataset, arch, mode, backbone, epochs, lr, momentum, batch_size, step_size,
               gamma, frozen_epochs, optimizer, train_blocks, patience, stop_metric="val_acc") -> tuple[Job | None, str]:
        """(the job, "") or (None, why it was not started)."""
        try:
            if None in (epochs, lr, momentum, batch_size, step_size, gamma, frozen_epochs, train_blocks, patience):
                raise UserError("every training setting needs a value")
            choice = catalog.find_dataset(self.settings, visitor, dataset)
            mode = catalog.check_choice(mode, MODES, "mode")
            form = TrainConfig(data_dir=choice.path, arch=catalog.check_choice(arch, ARCHS, "backbone"),
                               epochs=_number(int, epochs), lr=_number(float, lr), momentum=_number(float, momentum),
                               batch_size=_number(int, batch_size), step_size=_number(int, step_size),
                               gamma=_number(float, gamma), frozen_epochs=_number(int, frozen_epochs),
                               optimizer=catalog.check_choice(optimizer, OPTIMIZERS, "optimizer"),
                               train_blocks=_number(int, train_blocks), patience=_number(int, patience),
                               stop_metric=catalog.check_choice(stop_metric or "val_acc", STOP_METRICS, "stop metric"),
                               backbone_weights=catalog.find_backbone(self.settings, backbone).weights,
                               out_dir=str(catalog.checkpoint_folder(self.settings, visitor)))
            # The form's settings; the pretrained layers' share of the rate is the mode's (config.MODE_DEFAULTS).
            config = for_mode(form, catalog.check_choice(mode, MODES, "mode"), given={"lr", "patience"})
            needs = choice.download_to or config.backbone_weights == "imagenet" and not imagenet_weights_cached(config.arch)
            job = self.jobs.submit(visitor.key, config,
                                   prepare=functools.partial(prepare_run, choice, config) if needs else None)
        except UserError as e:  # any other exception is a bug and keeps its traceback
            reason = e
            gr.Warning(f"Not started: {reason}")
            return None, f"⚠ **Not started:** {reason}"
        return job, ""

    def train(self, dataset, arch, mode, backbone, epochs, lr, momentum, batch_size, step_size, gamma, frozen_epochs,
              optimizer, train_blocks, patience, stop_metric="val_acc", request: gr.Request = None,
              profile: gr.OAuthProfile | None = None):
        """/train for API clients: start the job, then stream its view until it is over."""
        visitor = self.visitors.of(request, profile)
        job, notice = self.submit(visitor, dataset, arch, mode, backbone, epochs, lr, momentum, batch_size,
                                  step_size, gamma, frozen_epochs, optimizer, train_blocks, patience, stop_metric)
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
            job = self.jobs.submit(visitor.key, config)
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
            return {**self.job_view(job, visitor), self.timer: gr.Timer(ACTIVE_TICK_S if active else IDLE_TICK_S)}
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
