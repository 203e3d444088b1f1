"""Build a dataset without a zip, in the Train tab: classes by name, images from files, the webcam or
the clipboard, per-class counts and the split to come, then Create dataset. draft.py does the work;
catalog.draft says whose draft it is."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import gradio as gr

from .. import catalog
from ..catalog import Settings
from ..draft import Draft
from ..errors import UserError
from ..views.common import thumbnail
from ..views.datasets import BUILDER_HELP, SNAPSHOT_HELP, added_markdown, draft_markdown, import_markdown
from .common import Visitors, click_busy, gallery_files, untrusted_image

SHOWN_IMAGES = 6  # the selected class's newest images
# The builder's camera streams its frames while it records, and a snapshot or a burst takes the next
# ones: the camera stays open between shots. A burst's frames are FRAME_EVERY seconds apart.
FRAME_EVERY = 0.3
CAMERA_TIME_LIMIT = 60  # seconds a stream holds its place; the page starts another by itself
CAMERA_STREAMS = 8
BURST_FRAMES = 10


class DatasetBuilder:
    """Rendered where it is created (the Train tab's left column). `dataset` is the Train tab's
    dataset picker and `dataset_picker` its refresh: a created dataset is selected there."""

    def __init__(self, settings: Settings, visitors: Visitors, dataset: gr.Dropdown, dataset_picker):
        self.settings, self.visitors, self.dataset, self.dataset_picker = settings, visitors, dataset, dataset_picker
        with gr.Accordion("Build a dataset from images (files, webcam, clipboard)", open=False,
                          elem_id="builder") as accordion:
            gr.Markdown(BUILDER_HELP)
            with gr.Row():
                self.new_name = gr.Textbox(label="New class", placeholder="e.g. cat", max_length=40, scale=3,
                                           elem_id="class-name")
                add_btn = gr.Button("Add class", scale=1, min_width=100, elem_id="add-class-btn")
            self.cls = gr.Radio([], label="Class to add images to", elem_id="draft-class")
            self.files = gr.File(file_count="multiple", label="Image files for this class", height=140,
                                 elem_id="draft-files")
            with gr.Row(elem_id="draft-camera-row"):
                self.camera = untrusted_image(sources=["webcam"], streaming=True, height=240,
                                              label="Webcam (click Record once, then take shots)",
                                              elem_id="draft-camera")
                self.frame = untrusted_image(sources=["clipboard", "upload"], height=240,
                                             label="Pasted or dropped image for this class", elem_id="draft-frame")
            with gr.Row():
                snap_btn = gr.Button("Snapshot", scale=1, min_width=100, elem_id="snap-btn")
                burst_frames = gr.Number(BURST_FRAMES, label="Burst frames", precision=0, minimum=2, maximum=50,
                                         scale=1, min_width=100, elem_id="burst-frames")
                burst_btn = gr.Button("Burst", scale=1, min_width=100, elem_id="burst-btn")
            gr.Markdown(SNAPSHOT_HELP.format(every=FRAME_EVERY), elem_id="snap-help")
            self.added = gr.Markdown(elem_id="draft-added")
            self.table = gr.Markdown(draft_markdown({}), elem_id="draft-table")
            self.gallery = gr.Gallery(label="Newest images of this class", columns=3, height="auto",
                                      object_fit="cover", visible=False, elem_id="draft-gallery")
            with gr.Row():
                self.rename_to = gr.Textbox(label="Rename this class to", max_length=40, scale=3,
                                            elem_id="rename-to")
                rename_btn = gr.Button("Rename", scale=1, min_width=80, elem_id="rename-btn")
                remove_btn = gr.Button("Remove class", variant="stop", scale=1, min_width=80, elem_id="remove-btn")
            with gr.Row():
                name_in = gr.Textbox("my-dataset", label="Dataset name", max_length=48, scale=3,
                                     elem_id="draft-name")
                create_btn = gr.Button("Create dataset", variant="primary", scale=1, min_width=100,
                                       elem_id="create-btn")
            self.created = gr.Markdown(elem_id="draft-created")
            self.shots = gr.State(0)  # frames the camera's stream is still to add

        shown = [self.cls, self.table, self.gallery, self.added]
        accordion.expand(self.show, self.cls, shown, api_name="draft")
        self.cls.input(self.show, self.cls, shown, api_visibility="private")
        gr.on([add_btn.click, self.new_name.submit], self.add_class, self.new_name, [*shown, self.new_name],
              api_name="draft_add_class")
        self.files.upload(self.add_images, [self.cls, self.files], [*shown, self.files, self.frame],
                          api_name="draft_add_images")
        # Each paste or drop is added at once and the box emptied for the next one; the
        # emptying is a change too, and is ignored.
        self.frame.change(self.add_images, [self.cls, self.frame], [*shown, self.files, self.frame],
                          api_name="draft_add_frame", show_progress="hidden")
        # The camera streams while it records; a shot (or burst) asks its next frames to be added.
        snap_btn.click(self.take, None, [self.shots, self.added], api_visibility="private", queue=False,
                       show_progress="hidden")
        burst_btn.click(self.take, burst_frames, [self.shots, self.added], api_visibility="private", queue=False,
                        show_progress="hidden")
        self.camera.stream(self.shoot, [self.cls, self.camera, self.shots], [*shown, self.shots],
                           stream_every=FRAME_EVERY, time_limit=CAMERA_TIME_LIMIT, concurrency_limit=CAMERA_STREAMS,
                           concurrency_id="builder-camera", show_progress="hidden", api_visibility="private")
        gr.on([rename_btn.click, self.rename_to.submit], self.rename, [self.cls, self.rename_to],
              [*shown, self.rename_to], api_name="draft_rename")
        remove_btn.click(self.remove, self.cls, shown, api_name="draft_remove")
        click_busy(create_btn, "Creating…", self.create, name_in, [self.created, dataset], api_name="draft_create")

    def draft(self, request: gr.Request, profile: gr.OAuthProfile | None) -> Draft:
        return catalog.draft(self.settings, self.visitors.of(request, profile))

    def view(self, draft: Draft, selected, added: str | None = None) -> dict:
        """The class list (`selected` picked, if it is one), the counts and the split to come, the
        selected class's newest images, and what just happened (None: leave that line as it is, so
        a redraw that finishes after a change does not wipe out what the change said)."""
        classes = draft.classes()
        selected = selected if selected in classes else (classes[0] if classes else None)
        newest = draft.images(selected)[:SHOWN_IMAGES] if selected else []
        return {self.cls: gr.Radio(classes, value=selected),
                self.table: draft_markdown(draft.split_preview()),
                self.gallery: gr.Gallery(gallery_files([(thumbnail(str(p)), selected) for p in newest]),
                                         visible=bool(newest)),
                **({} if added is None else {self.added: added})}

    def changed(self, request, profile, change, selected=None, done: dict | None = None) -> dict:
        """Apply `change(draft)` -> (class to select, what happened) and show the draft, plus the
        updates in `done`; or show the advice when it cannot be done (a UserError)."""
        draft = self.draft(request, profile)
        try:
            selected, message = change(draft)
        except UserError as e:
            return self.view(draft, selected, f"⚠ {e}")
        return {**self.view(draft, selected, message), **(done or {})}

    def show(self, selected, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        return self.view(self.draft(request, profile), selected)

    def add_class(self, name, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        def change(draft: Draft):
            added = draft.add_class(name)
            return added, f"Added class **{added}**: now add its images."
        return self.changed(request, profile, change, done={self.new_name: ""})

    def add_images(self, cls, files, request: gr.Request, profile: gr.OAuthProfile | None):
        """Files (a list) or one snapshot (a path); both upload boxes are emptied either way."""
        if not files:
            return gr.skip()  # a box was emptied
        def change(draft: Draft):
            added, skipped = draft.add_images(cls, files if isinstance(files, list) else [files])
            return cls, added_markdown(cls, added, skipped)
        return {**self.changed(request, profile, change, cls), self.files: None, self.frame: None}

    def take(self, frames=1) -> dict:
        """Snapshot (one frame) or Burst: the stream's next frames are added."""
        try:
            frames = max(1, min(50, int(frames)))
        except (TypeError, ValueError):
            frames = BURST_FRAMES
        return {self.shots: frames, self.added: f"Taking {frames} frame(s)… (is the webcam recording?)"}

    def shoot(self, cls, frame, shots: int, request: gr.Request, profile: gr.OAuthProfile | None):
        """A frame of the camera's stream: added to the class while shots are due, else ignored."""
        if not shots or frame is None:
            return gr.skip()
        with tempfile.TemporaryDirectory(prefix="bees_ants-frame-") as folder:
            # The frame as the browser sent it (in memory, or a file from an API client): the draft
            # decodes it with its own checks.
            path = Path(folder, f"webcam-{time.time_ns()}.png")
            path.write_bytes(frame.getvalue() if hasattr(frame, "getvalue") else Path(frame).read_bytes())
            def change(draft: Draft):
                added, skipped = draft.add_images(cls, [path])
                return cls, added_markdown(cls, added, skipped) + (f" {shots - 1} more to take…" if shots > 1 else "")
            shown = self.changed(request, profile, change, cls)
        # A refusal (no class picked, the draft full) ends the burst: the next frames would say the same.
        refused = str(shown.get(self.added, "")).startswith("⚠")
        return {**shown, self.shots: 0 if refused else shots - 1}

    def rename(self, cls, new, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        def change(draft: Draft):
            renamed = draft.rename_class(cls, new)
            return renamed, f"Renamed **{cls}** to **{renamed}**."
        return self.changed(request, profile, change, cls, done={self.rename_to: ""})

    def remove(self, cls, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        def change(draft: Draft):
            draft.remove_class(cls)
            return None, f"Removed class **{cls}** and its images."
        return self.changed(request, profile, change, cls)

    def create(self, name, request: gr.Request, profile: gr.OAuthProfile | None) -> dict:
        visitor = self.visitors.of(request, profile)
        try:
            # The draft's images are linked into the dataset, not copied: it adds no bytes.
            report = catalog.draft(self.settings, visitor).finish(catalog.room_for_dataset(self.settings, visitor),
                                                                  name if isinstance(name, str) else "")
        except UserError as e:  # nothing was created
            return {self.created: f"⚠ **Not created:** {e}"}
        return {self.created: import_markdown(report, done="Created"),
                self.dataset: self.dataset_picker(request, profile, report.path)}
