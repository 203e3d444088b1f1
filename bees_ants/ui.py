"""The Gradio app: widgets wired to the catalog, the job manager and the predictor.

Train: the button asks the job manager for a job and then follows it (a generator that yields on
every change). Every page also follows the job from its load event and gets a 1 s timer tick, so
a reloaded page or a second browser catches up with a job it did not start. The `seen` state is
the job version this page last drew, so ticks redraw only when something changed.
A zip upload on the Train tab becomes a new dataset folder in the data root (importer.import_zip).
Predict: checkpoints from the weights folder, loaded once each (catalog.load_predictor).
Evaluate & export: a checkpoint's curves (from its history), its confusion matrix, per-class
numbers and worst mistakes on its val set, and the checkpoint or its .pt2 export to download.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import gradio as gr

from . import catalog, views
from .catalog import CatalogError, Settings
from .checkpoint import CheckpointError, load_checkpoint
from .data import DatasetError
from .importer import import_zip
from .jobs import Job, JobBusy, JobManager
from .models import ARCHS
from .predict import val_sample_figure
from .device import describe_device, pick_device
from .train import TrainConfig

DEFAULTS = TrainConfig(data_dir="")
VAL_GRID_IMAGES = 8
NO_MODEL = "**No trained model yet** — train one in the **Train** tab, then pick it here."
# Galleries without a fixed height still reserve 450 px; these two are sized by their images.
CSS = """#status h3, #model-card h3, #eval-summary h3 { margin: 0 0 .3em 0; }
#thumbs .fixed-height, #mistakes .fixed-height { min-height: 0; }"""


@functools.lru_cache(maxsize=4)
def _val_grid(checkpoint: str, mtime: float, data_dir: str, seed: int):
    # One grid per finished run, shared by every page that shows it (mtime: the final save).
    return views.figure_image(val_sample_figure(catalog.load_predictor(checkpoint), data_dir, VAL_GRID_IMAGES, seed))


def val_grid(job: Job | None) -> gr.Image:
    image = None
    if job is not None and not job.active and job.checkpoint_path and Path(job.config.data_dir, "val").is_dir():
        try:
            image = _val_grid(job.checkpoint_path, os.path.getmtime(job.checkpoint_path), job.config.data_dir, job.id)
        except (OSError, CheckpointError):  # the checkpoint was deleted or replaced since the run
            pass
    return gr.Image(image, visible=image is not None)  # no empty box while training


def build_app(settings: Settings | None = None, jobs: JobManager | None = None) -> gr.Blocks:
    settings = settings or Settings.from_env()
    jobs = jobs or JobManager()
    datasets = catalog.dataset_choices(settings)
    backbones = catalog.backbone_choices(settings)
    arch = catalog.default_arch(backbones)

    def dataset_picker(value: str | None = None):
        fresh = catalog.dataset_choices(settings)
        return gr.Dropdown(choices=[(c.label, c.path) for c in fresh],
                           value=value or catalog.default_dataset(fresh).path)

    def model_picker():
        """Both model lists (Predict, Evaluate & export), newest selected, and the Predict note."""
        choices = catalog.checkpoint_choices(settings)
        newest = choices[0][1] if choices else None
        return (gr.Dropdown(choices=choices, value=newest), "" if choices else NO_MODEL,
                gr.Dropdown(choices=choices, value=newest))

    def render(job: Job | None):
        finished = job is not None and not job.active
        return (views.status_markdown(job), views.dataset_markdown(job), views.training_figure(job),
                views.history_table(job), views.result_markdown(job), val_grid(job), job.version if job else 0,
                *(model_picker() if finished else (gr.skip(),) * 3))

    # -- train handlers ------------------------------------------------------------------------

    def train(dataset, arch, mode, backbone, epochs, lr, momentum, batch_size, step_size, gamma, frozen_epochs):
        skip = (gr.skip(),) * len(train_view)
        try:
            if None in (epochs, lr, momentum, batch_size, step_size, gamma, frozen_epochs):
                raise ValueError("every training setting needs a value")
            choice = catalog.find_dataset(settings, dataset)
            config = TrainConfig(data_dir=choice.path, arch=arch, mode=mode, epochs=int(epochs), lr=float(lr),
                                 momentum=float(momentum), batch_size=int(batch_size), step_size=int(step_size),
                                 gamma=float(gamma), frozen_epochs=int(frozen_epochs),
                                 backbone_weights=catalog.find_backbone(settings, backbone).weights,
                                 out_dir=str(settings.weights_dir))
            job = jobs.start(config, prepare=choice.download if choice.download_to else None)
        except JobBusy as e:
            gr.Warning(f"Not started: {e}.")
            yield (f"⚠ **Not started:** {e}. The running job was not changed.", *skip)
            return
        except ValueError as e:  # CatalogError and TrainConfig's checks
            gr.Warning(f"Not started: {e}")
            yield (f"⚠ **Not started:** {e}", *skip)
            return
        yield ("", *render(job))
        for job in jobs.follow(job.version):
            yield (gr.skip(), *render(job))

    def follow(seen):
        for job in jobs.follow(seen):
            yield render(job)

    def tick(seen):
        job = jobs.snapshot()
        if (job.version if job else 0) != seen:
            return render(job)
        if job is not None and job.active:  # only the clock moved: redraw just the status line
            return (views.status_markdown(job), *(gr.skip(),) * (len(train_view) - 1))
        return gr.skip()

    def cancel():
        if jobs.cancel():
            return "■ Cancel requested: training stops after the current batch; the best checkpoint so far is kept."
        return "Nothing to cancel: no training job is running."

    def backbone_for(arch):
        return catalog.backbone_for_arch(catalog.backbone_choices(settings), arch).value

    def import_dataset(upload):
        if not upload:
            return "", gr.Gallery(visible=False), gr.skip()
        try:
            report = import_zip(upload, settings.data_root)
        except DatasetError as e:  # the importer has removed everything it wrote
            return f"⚠ **Not imported:** {e}. Nothing was kept.", gr.Gallery(None, visible=False), gr.skip()
        return (views.import_markdown(report), gr.Gallery(views.thumbnail_items(report), visible=True),
                dataset_picker(report.path))

    # -- predict handlers ----------------------------------------------------------------------

    def predictor_for(model):
        """The model's Predictor, or raises ValueError with what to do instead."""
        try:
            return catalog.load_predictor(catalog.check_checkpoint(settings, model))
        except CatalogError as e:
            raise ValueError(str(e) if catalog.checkpoint_choices(settings) else NO_MODEL) from None

    def predict(model, files):
        nothing = ([], None, "", views.predictions_table([]), [])
        if not files:
            return nothing
        try:
            predictor = predictor_for(model)
        except ValueError as e:  # said next to the upload, rather than as an error badge on every output
            return (*nothing[:2], f"⚠ {e}", *nothing[3:])
        predictions = predictor.predict(files)
        readable = [p for p in predictions if p.error is None]
        return (views.gallery_items(predictions), readable[0].probabilities if readable else None,
                views.problems_markdown(predictions), views.predictions_table(predictions),
                [p.probabilities for p in readable])

    def select(probabilities, evt: gr.SelectData):
        return probabilities[evt.index]

    def val_root(predictor) -> str:
        """The model's dataset folder, or raises ValueError when its val images are not on this server."""
        root = predictor.checkpoint.meta.get("dataset", {}).get("root")
        if not root or not Path(root, "val").is_dir():
            raise ValueError(f"This model's dataset ({root or 'unknown'}) is no longer on this server, "
                             "so there are no val images to use.")
        return root

    def random_val(model):
        try:
            predictor = predictor_for(model)
            root = val_root(predictor)
        except ValueError as e:
            raise gr.Error(str(e).replace("**", ""))
        return gr.Image(views.figure_image(val_sample_figure(predictor, root, VAL_GRID_IMAGES)), visible=True)

    def refresh_lists():
        return dataset_picker(), *model_picker()

    # -- evaluate & export handlers ------------------------------------------------------------

    def show_model(model):
        """The model's card and curves; what was shown for the previous model is cleared."""
        cleared = (*no_evaluation(""), gr.File(None, visible=False), "")
        try:
            meta = load_checkpoint(catalog.check_checkpoint(settings, model)).meta
        except ValueError as e:  # CatalogError, CheckpointError
            card = f"⚠ {e}" if catalog.checkpoint_choices(settings) else NO_MODEL
            return card, gr.Plot(None, visible=False), *cleared
        return views.model_markdown(meta), gr.Plot(views.checkpoint_figure(meta), visible=True), *cleared

    def no_evaluation(summary):
        return summary, gr.Plot(None, visible=False), gr.Dataframe(visible=False), gr.Gallery(None, visible=False)

    def evaluate(model):
        try:
            predictor = predictor_for(model)
            evaluation = predictor.evaluate(val_root(predictor), "val")
        except ValueError as e:  # no such model, dataset gone or changed (DatasetError is a ValueError)
            return no_evaluation(f"⚠ {e}")
        mistakes = views.mistake_items(evaluation)
        return (views.evaluation_markdown(evaluation, predictor.checkpoint.meta),
                gr.Plot(views.confusion_figure(evaluation), visible=True),
                gr.Dataframe(views.per_class_table(evaluation), visible=True),
                gr.Gallery(mistakes, visible=bool(mistakes)))

    def takeaway(model, fetch):
        try:
            checkpoint = catalog.check_checkpoint(settings, model)
            path = fetch(settings, checkpoint)
        except ValueError as e:  # CatalogError, CheckpointError
            raise gr.Error(str(e))
        return gr.File(path, visible=True), views.takeaway_markdown(path, load_checkpoint(checkpoint).meta)

    def download(model):
        return takeaway(model, catalog.check_checkpoint)

    def export(model):
        return takeaway(model, catalog.exported_program)

    # -- layout --------------------------------------------------------------------------------

    with gr.Blocks(title="Ants vs bees · transfer learning", analytics_enabled=False) as app:
        gr.Markdown("# Ants vs bees · transfer learning\nTrain an ImageNet backbone on an image folder, "
                    "watch it learn, classify your own pictures, see where it errs and take the model away.")
        seen = gr.State(-1)
        with gr.Tabs():
            with gr.Tab("Train", id="train", elem_id="tab-train"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=320):
                        dataset_in = gr.Dropdown([(c.label, c.path) for c in datasets], label="Dataset",
                                                 value=catalog.default_dataset(datasets).path,
                                                 allow_custom_value=True, elem_id="dataset")
                        with gr.Accordion("Add your own dataset (.zip)", open=False, elem_id="own-data"):
                            gr.Markdown(views.UPLOAD_HELP)
                            upload_in = gr.File(file_types=[".zip"], label="Dataset zip", height=100,
                                                elem_id="upload")
                            import_info = gr.Markdown(label="import", elem_id="import-info")
                            thumbs = gr.Gallery(label="A few training images per class",
                                                columns=views.THUMBNAILS_SHOWN, object_fit="cover", visible=False,
                                                elem_id="thumbs")
                        arch_in = gr.Dropdown(list(ARCHS), value=arch, label="Backbone", elem_id="arch")
                        backbone_in = gr.Dropdown([(c.label, c.value) for c in backbones],
                                                  value=catalog.backbone_for_arch(backbones, arch).value,
                                                  label="Start from weights", allow_custom_value=True,
                                                  elem_id="backbone")
                        # On a CPU (a free Space) fine-tuning costs minutes per epoch while the fixed
                        # extractor caches its features and finishes in seconds: default to what works.
                        on_cpu = pick_device().type == "cpu"
                        mode_in = gr.Radio([(label, mode) for mode, label in views.MODE_LABELS.items()],
                                           value="fixed" if on_cpu else DEFAULTS.mode, label="Mode",
                                           info="On this CPU the fixed extractor takes seconds; fine-tuning "
                                                "takes minutes per epoch." if on_cpu else None, elem_id="mode")
                        with gr.Accordion("Hyperparameters", open=True):
                            with gr.Row():
                                epochs_in = gr.Number(DEFAULTS.epochs, label="Epochs", precision=0, minimum=1,
                                                      maximum=1000, elem_id="epochs")
                                batch_in = gr.Number(DEFAULTS.batch_size, label="Batch size", precision=0,
                                                     minimum=1, maximum=512, elem_id="batch-size")
                            with gr.Row():
                                lr_in = gr.Number(DEFAULTS.lr, label="Learning rate", minimum=1e-7, maximum=10,
                                                  step=0.0005, elem_id="lr")
                                momentum_in = gr.Number(DEFAULTS.momentum, label="Momentum", minimum=0,
                                                        maximum=0.999, step=0.05, elem_id="momentum")
                            with gr.Row():
                                step_in = gr.Number(DEFAULTS.step_size, label="LR step size (epochs)", precision=0,
                                                    minimum=1, maximum=1000, elem_id="step-size")
                                gamma_in = gr.Number(DEFAULTS.gamma, label="LR gamma", minimum=0.0001, maximum=1,
                                                     step=0.05, elem_id="gamma")
                            frozen_in = gr.Number(DEFAULTS.frozen_epochs, label="Frozen epochs (progressive mode "
                                                  "only: head-only epochs before unfreezing)", precision=0,
                                                  minimum=1, maximum=1000, elem_id="frozen-epochs")
                        gr.Markdown(f"**Device:** {describe_device(pick_device())}", elem_id="device")
                        with gr.Row():
                            train_btn = gr.Button("Train", variant="primary", elem_id="train-btn")
                            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
                        notice = gr.Markdown(label="notice", elem_id="notice")
                    with gr.Column(scale=2):
                        status = gr.Markdown(views.status_markdown(None), label="status", elem_id="status")
                        dataset_info = gr.Markdown(label="dataset", elem_id="dataset-info")
                        curves = gr.Plot(label="curves", show_label=False, elem_id="curves")
                        table = gr.Dataframe(views.history_table(None), label="Epochs (newest first)",
                                             interactive=False, max_height=300, elem_id="history")
                        result = gr.Markdown(label="result", elem_id="result")
                        grid = gr.Image(label="val_predictions", show_label=False, type="pil", interactive=False,
                                        visible=False, elem_id="val-grid")
            with gr.Tab("Predict", id="predict", elem_id="tab-predict"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=320):
                        model_in = gr.Dropdown(label="Model", allow_custom_value=True, elem_id="model")
                        with gr.Row():
                            model_note = gr.Markdown(label="model_note", elem_id="model-note")
                            refresh_btn = gr.Button("Refresh list", size="sm", scale=0, min_width=110,
                                                    elem_id="refresh-btn")
                        files_in = gr.File(file_count="multiple", label="Images to classify (one or many)",
                                           elem_id="files")
                        problems = gr.Markdown(label="problems", elem_id="problems")
                        confidences = gr.Label(label="Confidence for the selected image", elem_id="confidences")
                        val_btn = gr.Button("Predictions on random val images", elem_id="val-btn")
                    with gr.Column(scale=2):
                        gallery = gr.Gallery(label="Predictions", columns=4, height="auto", object_fit="contain",
                                             elem_id="gallery")
                        results = gr.Dataframe(views.predictions_table([]), label="Per file", interactive=False,
                                               max_height=300, elem_id="results")
                        val_samples = gr.Image(label="Random val images: predicted vs true", type="pil",
                                               interactive=False, show_label=False, visible=False,
                                               elem_id="val-samples")
                probabilities = gr.State([])
            with gr.Tab("Evaluate & export", id="evaluate", elem_id="tab-evaluate"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=320):
                        eval_model_in = gr.Dropdown(label="Model", allow_custom_value=True, elem_id="eval-model")
                        model_card = gr.Markdown(NO_MODEL, label="model", elem_id="model-card")
                        eval_btn = gr.Button("Evaluate on its val set", variant="primary", elem_id="eval-btn")
                        gr.Markdown("**Take the model away**")
                        with gr.Row():
                            download_btn = gr.Button("Download checkpoint", scale=3, elem_id="download-btn")
                            export_btn = gr.Button("Export (.pt2)", scale=2, elem_id="export-btn")
                        model_file = gr.File(label="Model file", interactive=False, visible=False,
                                             elem_id="model-file")
                        model_file_note = gr.Markdown(label="how to use it", elem_id="model-file-note")
                    with gr.Column(scale=2):
                        model_curves = gr.Plot(label="curves", show_label=False, visible=False,
                                               elem_id="model-curves")
                        eval_summary = gr.Markdown(label="evaluation", elem_id="eval-summary")
                        with gr.Row():
                            confusion = gr.Plot(label="confusion", show_label=False, visible=False,
                                                elem_id="confusion")
                            per_class = gr.Dataframe(headers=views.PER_CLASS_COLUMNS, label="Per class",
                                                     interactive=False, visible=False, elem_id="per-class")
                        mistakes = gr.Gallery(label="Mistakes, worst first", columns=3, object_fit="contain",
                                              visible=False, elem_id="mistakes")
        timer = gr.Timer(1.0)

        # -- wiring ----------------------------------------------------------------------------
        pickers = [model_in, model_note, eval_model_in]
        train_view = [status, dataset_info, curves, table, result, grid, seen, *pickers]
        settings_in = [dataset_in, arch_in, mode_in, backbone_in, epochs_in, lr_in, momentum_in, batch_in,
                       step_in, gamma_in, frozen_in]
        # "multiple": a second click reaches the server while the first one streams and gets its
        # refusal; no concurrency limit, or it would queue behind the first click's stream.
        train_btn.click(train, settings_in, [notice, *train_view], api_name="train", concurrency_limit=None,
                        trigger_mode="multiple", show_progress="hidden")
        cancel_btn.click(cancel, None, notice, api_name="cancel", concurrency_limit=None)
        app.load(follow, seen, train_view, api_name="follow", concurrency_limit=None, show_progress="hidden")
        timer.tick(tick, seen, train_view, api_visibility="private", concurrency_limit=None, show_progress="hidden")
        arch_in.input(backbone_for, arch_in, backbone_in, api_visibility="private")
        app.load(refresh_lists, None, [dataset_in, *pickers], api_visibility="private")
        upload_in.upload(import_dataset, upload_in, [import_info, thumbs, dataset_in], api_name="import_dataset")

        predict_out = [gallery, confidences, problems, results, probabilities]
        files_in.change(predict, [model_in, files_in], predict_out, api_name="predict", concurrency_id="inference")
        model_in.input(predict, [model_in, files_in], predict_out, api_visibility="private",
                       concurrency_id="inference")
        gallery.select(select, probabilities, confidences, api_visibility="private")
        val_btn.click(random_val, model_in, val_samples, api_name="random_val", concurrency_id="inference")
        refresh_btn.click(model_picker, None, pickers, api_name="models")

        evaluation_view = [eval_summary, confusion, per_class, mistakes]
        eval_model_in.change(show_model, eval_model_in, [model_card, model_curves, *evaluation_view, model_file,
                                                         model_file_note], api_name="model_info")
        eval_btn.click(evaluate, eval_model_in, evaluation_view, api_name="evaluate", concurrency_id="inference")
        download_btn.click(download, eval_model_in, [model_file, model_file_note], api_name="download_checkpoint")
        export_btn.click(export, eval_model_in, [model_file, model_file_note], api_name="export",
                         concurrency_id="inference")
    return app
