"""The Evaluate & export tab: a model's card and curves, its evaluation, and files to take away."""
from __future__ import annotations

import gradio as gr

from .. import catalog
from ..catalog import Settings
from ..checkpoint import load_checkpoint
from ..errors import UserError
from ..figures import confusion_figure
from ..housekeeping import Housekeeper
from ..hub import push_to_hub
from ..jobs import JobManager
from ..views.evaluation import (PER_CLASS_COLUMNS, checkpoint_curves, evaluation_markdown, mistake_items,
                                model_markdown, per_class_table, pushed_markdown, shown_mistakes, takeaway_markdown)
from ..visitors import Visitor
from .common import (NO_MODEL, ModelPickers, Visitors, checked_model, click_busy, gallery_files, predictor_for,
                     val_root)

MISTAKES_LABEL = "Mistakes, worst first"
MISTAKES_GRADCAM_LABEL = "Mistakes, worst first: where the model saw the class it chose (red)"


class EvaluateTab:
    """A model's card and curves; its evaluation on its val set (summary, confusion matrix, per-class
    numbers, mistakes); the checkpoint, its .pt2 / .onnx export or a web page running it to download,
    a push to the Hub, or the visitor's own model deleted."""

    def __init__(self, settings: Settings, visitors: Visitors, models: ModelPickers, jobs: JobManager,
                 housekeeper: Housekeeper):
        self.settings, self.visitors, self.models, self.jobs = settings, visitors, models, jobs
        self.housekeeper = housekeeper
        with gr.Tab("Evaluate & export", id="evaluate", elem_id="tab-evaluate"), gr.Row():
            with gr.Column(scale=1, min_width=320):
                models.evaluate.render()
                self.model_card = gr.Markdown(NO_MODEL, label="model", elem_id="model-card")
                eval_btn = gr.Button("Evaluate on its val set", variant="primary", elem_id="eval-btn")
                gr.Markdown("**Take the model away**")
                with gr.Row():
                    download_btn = gr.Button("Download checkpoint", scale=3, elem_id="download-btn")
                    export_btn = gr.Button("Export (.pt2)", scale=2, elem_id="export-btn")
                    onnx_btn = gr.Button("Export ONNX", scale=2, elem_id="onnx-btn")
                    web_btn = gr.Button("Download as web page", scale=3, elem_id="web-btn")
                self.model_file = gr.File(label="Model file", interactive=False, visible=False, elem_id="model-file")
                self.model_file_note = gr.Markdown(label="how to use it", elem_id="model-file-note")
                with gr.Accordion("Push to the Hugging Face Hub", open=False, elem_id="push"):
                    repo_id = gr.Textbox(label="Repo id", placeholder="your-name/ants-vs-bees", elem_id="repo-id")
                    token = gr.Textbox(label="Write token", type="password", elem_id="hub-token",
                                       placeholder="hf_… (signed in on a Space: leave empty)")
                    with gr.Row():
                        private = gr.Checkbox(label="Private repo", elem_id="hub-private")
                        push_btn = gr.Button("Push to Hub", variant="primary", elem_id="push-btn")
                    self.pushed = gr.Markdown(label="pushed", elem_id="pushed")
                with gr.Accordion("Delete this model", open=False, elem_id="delete-model"):
                    gr.Markdown("Removes your own model, its exports and its resume state from this server "
                                "(shared models stay). Download it first to keep a copy.")
                    delete_btn = gr.Button("Delete this model", variant="stop", elem_id="delete-model-btn")
                    self.deleted = gr.Markdown(label="deleted", elem_id="model-deleted")
            with gr.Column(scale=2):
                self.model_curves = gr.HTML(label="curves", visible=False, elem_id="model-curves")
                self.summary = gr.Markdown(label="evaluation", elem_id="eval-summary")
                with gr.Row():  # side by side when both fit their whole width, else one above the other
                    self.confusion = gr.Plot(label="confusion", show_label=False, visible=False, min_width=300,
                                             elem_id="confusion")
                    self.per_class = gr.Dataframe(headers=PER_CLASS_COLUMNS, label="Per class", interactive=False,
                                                  visible=False, min_width=460, elem_id="per-class")
                self.mistake_heatmaps = gr.Checkbox(label="Show where the model looked (Grad-CAM for the class it chose)",
                                                    visible=False, elem_id="mistakes-gradcam")
                self.mistakes = gr.Gallery(label=MISTAKES_LABEL, columns=3, object_fit="contain",
                                           visible=False, elem_id="mistakes")
            self.evaluated = gr.State(None)  # (model, Evaluation) whose mistakes are shown

        evaluation = [self.summary, self.confusion, self.per_class, self.mistakes, self.mistake_heatmaps, self.evaluated]
        takeaway = [self.model_file, self.model_file_note]
        shown = [self.model_card, self.model_curves, *evaluation, *takeaway]
        models.evaluate.change(self.show_model, models.evaluate, shown, api_name="model_info")
        click_busy(eval_btn, "Evaluating…", self.evaluate, models.evaluate, evaluation, api_name="evaluate",
                   concurrency_id="inference")
        self.mistake_heatmaps.input(self.explain_mistakes, [self.mistake_heatmaps, self.evaluated], self.mistakes,
                                    api_name="explain_mistakes", concurrency_id="inference")
        # The four write the same file box: while one works, none can be pressed.
        takers = (download_btn, export_btn, onnx_btn, web_btn)
        for button, busy, fn, api_name in ((download_btn, "Copying…", self.download, "download_checkpoint"),
                                           (export_btn, "Exporting…", self.export, "export"),
                                           (onnx_btn, "Exporting…", self.export_onnx, "export_onnx"),
                                           (web_btn, "Exporting…", self.export_web_page, "export_web_page")):
            click_busy(button, busy, fn, models.evaluate, takeaway, together=tuple(b for b in takers if b is not button),
                       api_name=api_name, **({} if fn == self.download else {"concurrency_id": "inference"}))
        click_busy(push_btn, "Pushing…", self.push, [models.evaluate, repo_id, token, private], self.pushed,
                   api_name="push_to_hub", concurrency_id="inference")
        delete_btn.click(self.delete, models.evaluate, [self.deleted, *models.outputs], api_name="delete_model")

    def show_model(self, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        """The model's card and curves; what was shown for the previous model is cleared."""
        visitor = self.visitors.of(request, profile)
        cleared = {**self.no_evaluation(""), self.model_file: gr.File(None, visible=False), self.model_file_note: ""}
        try:
            meta = load_checkpoint(catalog.check_checkpoint(self.settings, visitor, model)).meta
        except UserError as e:
            card = f"⚠ {e}" if catalog.checkpoint_choices(self.settings, visitor) else NO_MODEL
            return {self.model_card: card, self.model_curves: gr.HTML(visible=False), **cleared}
        return {self.model_card: model_markdown(meta),
                self.model_curves: gr.HTML(checkpoint_curves(meta), visible=True), **cleared}

    def no_evaluation(self, summary: str) -> dict:
        return {self.summary: summary, self.confusion: gr.Plot(None, visible=False),
                self.per_class: gr.Dataframe(visible=False), self.mistakes: gr.Gallery(None, visible=False),
                self.mistake_heatmaps: gr.Checkbox(False, visible=False), self.evaluated: None}

    def evaluate(self, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        try:
            predictor = predictor_for(self.settings, self.visitors.of(request, profile), model)
            evaluation = predictor.evaluate(val_root(predictor), "val")
        except UserError as e:  # no such model, its dataset gone or changed
            return self.no_evaluation(f"⚠ {e}")
        mistakes = gallery_files(mistake_items(evaluation))
        return {self.summary: evaluation_markdown(evaluation, predictor.checkpoint.meta),
                self.confusion: gr.Plot(confusion_figure(evaluation), visible=True),
                self.per_class: gr.Dataframe(per_class_table(evaluation), visible=True),
                self.mistakes: gr.Gallery(mistakes, label=MISTAKES_LABEL, visible=bool(mistakes)),
                self.mistake_heatmaps: gr.Checkbox(False, visible=bool(mistakes)), self.evaluated: (model, evaluation)}

    def explain_mistakes(self, heatmaps: bool, evaluated: tuple | None, request: gr.Request,
                         profile: gr.OAuthProfile | None) -> gr.Gallery:
        """The shown mistakes again: with Grad-CAM overlays for the class the model wrongly chose, or plain."""
        if evaluated is None:
            raise gr.Error("Evaluate a model first: the heatmaps are drawn over its mistakes.")
        model, evaluation = evaluated
        if not heatmaps:
            return gr.Gallery(gallery_files(mistake_items(evaluation)), label=MISTAKES_LABEL)
        try:
            predictor = predictor_for(self.settings, self.visitors.of(request, profile), model)
        except UserError as e:  # the model was deleted since
            raise gr.Error(str(e).replace("**", "")) from None
        shown = shown_mistakes(evaluation)
        explanations = predictor.explain([evaluation.paths[i] for i in shown],
                                         targets=[evaluation.predicted[i] for i in shown])
        return gr.Gallery(gallery_files(mistake_items(evaluation, explanations)), label=MISTAKES_GRADCAM_LABEL)

    def download(self, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        return self.takeaway(model, catalog.check_checkpoint, self.visitors.of(request, profile))

    def export(self, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        return self.takeaway(model, catalog.exported_program, self.visitors.of(request, profile))

    def export_onnx(self, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        return self.takeaway(model, catalog.exported_onnx, self.visitors.of(request, profile))

    def export_web_page(self, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        return self.takeaway(model, catalog.exported_web_page, self.visitors.of(request, profile))

    def push(self, model: str, repo_id: str, token: str, private: bool, request: gr.Request,
             profile: gr.OAuthProfile | None, oauth_token: gr.OAuthToken | None) -> str:
        """The visitor's model to their Hub repo, with the token typed or, signed in on a Space,
        their own; evaluated on its val set first when that is here, for the card."""
        visitor = self.visitors.of(request, profile)
        try:
            checkpoint = checked_model(self.settings, visitor, model)
            try:
                predictor = predictor_for(self.settings, visitor, checkpoint)
                evaluation = predictor.evaluate(val_root(predictor), "val")
            except UserError:  # its dataset is gone: the card goes without a confusion matrix
                evaluation = None
            repo_id = (repo_id or "").strip()
            url = push_to_hub(checkpoint, repo_id, (token or "").strip() or (oauth_token.token if oauth_token else None),
                              evaluation, private=bool(private))
        except UserError as e:
            return f"⚠ {e}"
        return pushed_markdown(url, repo_id, evaluation is not None)

    def delete(self, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        """The visitor's own model removed; both model lists read again."""
        visitor = self.visitors.of(request, profile)
        job = self.jobs.latest(visitor.key)
        running = (job.checkpoint_path or "", job.config.checkpoint_path or "") if job is not None and job.active else ()
        try:
            name = catalog.delete_checkpoint(self.settings, visitor, model, in_use=running)
        except UserError as e:
            return {self.deleted: f"⚠ {e}"}
        return {self.deleted: f"Deleted **{name}**.", **self.models.for_visitor(visitor)}

    def takeaway(self, model: str, fetch, visitor: Visitor) -> dict:
        """`fetch(settings, visitor, checkpoint)`'s file to download, with how to use it."""
        try:
            checkpoint = checked_model(self.settings, visitor, model)
            path = fetch(self.settings, visitor, checkpoint)
        except UserError as e:
            raise gr.Error(str(e).replace("**", "")) from None  # a toast shows no markdown
        # Handed over as a copy: the weights folder itself is never served by URL.
        return {self.model_file: gr.File(self.housekeeper.download_copy(visitor, path), visible=True),
                self.model_file_note: takeaway_markdown(path, load_checkpoint(checkpoint).meta)}
