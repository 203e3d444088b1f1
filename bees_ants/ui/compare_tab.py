"""The Compare tab: two or more of the visitor's models side by side, from their checkpoints' metadata."""
from __future__ import annotations

import gradio as gr

from .. import catalog
from ..catalog import Settings
from ..errors import UserError
from ..views.comparison import comparison_curves, comparison_markdown
from .common import Visitors

MAX_COMPARED = 8  # more lines than this on one plot cannot be told apart


class CompareTab:
    """A pick of the visitor's models; their curves on the same axes and a table of what each one
    trained on, how, and what came out. Only the side files are read, so it is quick for any model."""

    def __init__(self, settings: Settings, visitors: Visitors):
        self.settings, self.visitors = settings, visitors
        with gr.Tab("Compare", id="compare", elem_id="tab-compare") as tab:
            self.picker = gr.Dropdown(label="Models to compare", multiselect=True, max_choices=MAX_COMPARED,
                                      allow_custom_value=True,
                                      info="Pick two or more of your models: their curves on the same axes, "
                                           "and what differs between them.", elem_id="compare-models")
            self.curves = gr.HTML(label="curves", visible=False, elem_id="compare-curves")
            self.table = gr.Markdown(comparison_markdown([]), elem_id="compare-table")
        # The list is read again whenever the tab is opened: it then has every model trained since.
        tab.select(self.picker_choices, self.picker, self.picker, api_visibility="private")
        self.picker.change(self.compare, self.picker, [self.curves, self.table],
                           api_name="compare", show_progress="hidden")

    def picker_choices(self, picked: list[str] | None, request: gr.Request, profile: gr.OAuthProfile | None):
        """The visitor's models, newest first; what was picked stays picked while it is there."""
        choices = catalog.checkpoint_choices(self.settings, self.visitors.of(request, profile))
        paths = {path for _, path in choices}
        return gr.Dropdown(choices=choices, value=[p for p in picked or [] if p in paths])

    def compare(self, picked: list[str] | None, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        try:
            if not isinstance(picked, list):
                raise UserError("choose a model from the list")
            if len(picked) > MAX_COMPARED:
                raise UserError(f"pick at most {MAX_COMPARED} models")
            metas = catalog.checkpoint_metas(self.settings, self.visitors.of(request, profile), picked)
        except UserError as e:
            return {self.curves: gr.HTML(visible=False), self.table: f"⚠ {e}"}
        if not metas:
            return {self.curves: gr.HTML(visible=False), self.table: comparison_markdown([])}
        return {self.curves: gr.HTML(comparison_curves(metas), visible=True),
                self.table: comparison_markdown(metas)}
