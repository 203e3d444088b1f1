"""The Predict tab: classify uploaded images with a saved model."""
from __future__ import annotations

import gradio as gr

from ..catalog import Settings
from ..errors import UserError
from ..figures import figure_image
from ..housekeeping import Housekeeper
from ..predict import val_sample_figure
from ..views.predictions import explanation_items, gallery_items, predictions_table, problems_markdown
from .common import (VAL_GRID_IMAGES, ModelPickers, Visitors, click_busy, gallery_files, image_file, predictor_for,
                     val_root)
from .live import LiveView

EXPLAINED_LABEL = "Where the model looks (Grad-CAM): red marks the evidence for its prediction"


class PredictTab:
    """A model and images to classify: a labelled gallery, the selected image's confidences, one row
    per file; on demand, where the model looked in each (Grad-CAM); or the model's predictions on
    random images of its val set."""

    def __init__(self, settings: Settings, visitors: Visitors, models: ModelPickers, housekeeper: Housekeeper):
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
                    explain_btn = gr.Button("Explain (Grad-CAM)", elem_id="explain-btn")
                with gr.Column(scale=2):
                    self.gallery = gr.Gallery(label="Predictions", columns=4, height="auto", object_fit="contain",
                                              elem_id="gallery")
                    self.results = gr.Dataframe(predictions_table([]), label="Per file", interactive=False,
                                                max_height=300, elem_id="results")
                    self.explained = gr.Gallery(label=EXPLAINED_LABEL, columns=4, height="auto", object_fit="contain",
                                                visible=False, elem_id="explained")
                    val_samples = gr.Image(label="Random val images: predicted vs true", type="filepath",
                                           interactive=False, show_label=False, visible=False,
                                           alt_text="Random val images with the model's predicted and true classes",
                                           elem_id="val-samples")
            LiveView(settings, visitors, models, housekeeper)
            self.probabilities = gr.State([])  # per readable image, for the gallery's select event

        shown = [self.gallery, self.confidences, self.problems, self.results, self.probabilities]
        # The progress shows on the upload box too: no second drop while the first is classified.
        files_in.change(self.predict, [models.predict, files_in], shown, api_name="predict",
                        concurrency_id="inference", show_progress_on=[files_in, self.gallery])
        models.predict.input(self.predict, [models.predict, files_in], shown, api_visibility="private",
                             concurrency_id="inference")
        self.gallery.select(self.select, self.probabilities, self.confidences, api_visibility="private")
        click_busy(val_btn, "Predicting…", self.random_val, models.predict, val_samples, api_name="random_val",
                   concurrency_id="inference")
        click_busy(explain_btn, "Explaining…", self.explain, [models.predict, files_in], self.explained,
                   api_name="explain", concurrency_id="inference")
        # Heatmaps of other images or of another model would mislead: they go until asked for again.
        for changed in (files_in.change, models.predict.change):
            changed(self.hide_explanations, None, self.explained, api_visibility="private")

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
        return {self.gallery: gallery_files(gallery_items(predictions)), self.confidences: readable[0] if readable else None,
                self.problems: problems_markdown(predictions),
                self.results: predictions_table(predictions), self.probabilities: readable}

    def select(self, probabilities: list[dict], evt: gr.SelectData) -> dict:
        return probabilities[evt.index]

    def explain(self, model: str, files: list[str] | None, request: gr.Request,
                profile: gr.OAuthProfile | None) -> gr.Gallery:
        """Grad-CAM overlays of the uploaded images, for the class the model predicts for each."""
        if not files:
            raise gr.Error("Add images to classify first: Explain shows where the model looks in each of them.")
        try:
            predictor = predictor_for(self.settings, self.visitors.of(request, profile), model)
        except UserError as e:
            raise gr.Error(str(e).replace("**", "")) from None  # a toast shows no markdown
        return gr.Gallery(gallery_files(explanation_items(predictor.explain(files))), visible=True)

    def hide_explanations(self) -> gr.Gallery:
        return gr.Gallery(None, visible=False)

    def random_val(self, model: str, request: gr.Request, profile: gr.OAuthProfile | None) -> gr.Image:
        try:
            predictor = predictor_for(self.settings, self.visitors.of(request, profile), model)
            root = val_root(predictor)
        except UserError as e:
            raise gr.Error(str(e).replace("**", "")) from None  # a toast shows no markdown
        figure = val_sample_figure(predictor, root, VAL_GRID_IMAGES)
        return gr.Image(image_file(figure_image(figure), "PNG"), visible=True)
