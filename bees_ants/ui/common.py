"""What the tabs share: who is asking (Visitors), the model pickers, images written as files, and
image boxes whose pictures the app decodes itself (untrusted_image)."""
from __future__ import annotations

import io
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import gradio as gr
from gradio import processing_utils
from gradio_client import utils as client_utils

from .. import catalog
from ..catalog import Settings
from ..errors import UserError
from ..housekeeping import app_temp_folder
from ..predict import Predictor
from ..settings import on_space, sign_in_offered
from ..visitors import KEY_HEADER, Visitor, identify, new_browser_id

VAL_GRID_IMAGES = 8
NO_MODEL = "**No trained model yet** — train one in the **Train** tab, then pick it here."


def gradio_cache() -> Path:
    """Gradio's cache folder: uploads, and the app's own temp folders (housekeeping.app_temp_folder),
    whose files Gradio serves as they are, without copying them again. housekeeping.Housekeeper
    removes the app's after BEES_ANTS_TEMP_MINUTES, and what Gradio leaves behind."""
    return Path(gr.utils.get_upload_folder())


def image_file(image, format: str = "JPEG") -> str:
    """A PIL image written once under a name of its own inside Gradio's cache folder, which
    Gradio then serves as it is. Every image the app shows goes through here.

    Handed PIL images, Gradio writes each to a cache path named by its content hash, truncating
    and rewriting the file if it is there: two requests showing the same image rewrite it while it
    is being served, and a download fails ("Too little data for declared Content-Length"). A file
    already in the cache is neither copied nor rewritten, and no other request uses its name."""
    folder = app_temp_folder(gradio_cache(), "images")
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


def untrusted_image(**options) -> gr.Image:
    """An image box (webcam, clipboard, upload) whose picture reaches the handler as a file, not
    decoded: the app decodes it with its own checks and reasons (predict, draft). gr.Image opens
    every picture with PIL before the handler runs, so a file that is no image got PIL's error,
    naming a temp path on the server. The box's `preprocess` is replaced on the instance: a
    subclass of a Gradio component makes Gradio write a .pyi stub beside this source file."""
    box = gr.Image(type="filepath", **options)

    def preprocess(payload) -> str | io.BytesIO | None:
        if payload is None:
            return None
        if payload.path is None and payload.url and payload.url.startswith("data:"):  # sent inline
            if box.streaming:  # a webcam frame, several a second: kept in memory, never written
                return io.BytesIO(client_utils.decode_base64_to_binary(payload.url)[0])
            return processing_utils.save_base64_to_cache(payload.url, box.GRADIO_CACHE)
        return payload.path

    box.preprocess = preprocess
    return box
def click_busy(button: gr.Button, busy_label: str, fn, inputs, outputs, together: tuple[gr.Button, ...] = (),
               **event) -> None:
    """`button.click(fn, inputs, outputs, **event)` for work that takes seconds: at the click the
    button says `busy_label` and, with the buttons `together` (those writing the same outputs), cannot
    be pressed; all come back when fn is done, or has failed. The named endpoint (event's api_name)
    is fn's alone, with its own inputs and outputs: the steps around it are private, so API and MCP
    clients see what they always saw."""
    buttons = [button, *together]
    labels = {b: b.value for b in buttons}
    quick = dict(queue=False, show_progress="hidden", api_visibility="private")
    button.click(lambda: {b: gr.Button(busy_label if b is button else labels[b], interactive=False) for b in buttons},
                 None, buttons, **quick).then(
        fn, inputs, outputs, **event).then(
        lambda: {b: gr.Button(labels[b], interactive=True) for b in buttons}, None, buttons, **quick)


class Visitors:
    """Who is behind each request (visitors.identify decides; this reads the request). A page
    tells us once, on load, which browser it is (an id kept in the browser's localStorage, so it
    survives reloads and restarts); a signed-in Hugging Face account wins over that; an API client
    or an MCP agent that sends the X-Bees-Ants-Key header is that key; any other API client is its
    session. Gradio's MCP server marks the calls it relays with `x-gradio-user: mcp` and passes on
    the agent's own headers (its key among them). Handlers call `of(request, profile)`."""

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
                    + (" (sign in to keep them across devices)." if sign_in_offered() else "."))
        return browser_id, text

    def of(self, request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> Visitor:
        """The visitor; a key that breaks the rule is refused with the rule (gr.Error)."""
        session = getattr(request, "session_hash", None)
        headers = getattr(request, "headers", None) or {}
        try:
            return identify(profile.username if profile else None, self._browsers.get(session), session,
                            key=headers.get(KEY_HEADER), via_mcp=headers.get("x-gradio-user") == "mcp",
                            source=client_address(request))
        except UserError as e:
            raise gr.Error(str(e)) from None


def client_address(request: gr.Request | None) -> str:
    """The network address a request came from. On a Space every request arrives through Hugging
    Face's proxy, which puts the client's address first in X-Forwarded-For; anywhere else that
    header is whatever the client sent, so the connection's own address is used."""
    if request is None:
        return ""
    forwarded = request.headers.get("x-forwarded-for", "") if on_space() else ""
    if forwarded.split(",")[0].strip():
        return forwarded.split(",")[0].strip()
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or ""


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


def checked_model(settings: Settings, visitor: Visitor, model: str) -> str:
    """The checkpoint `model` if the visitor may use it, or a UserError saying what to do instead:
    with an empty list, "choose a model from the list" would be a dead end."""
    try:
        return catalog.check_checkpoint(settings, visitor, model)
    except UserError:
        if catalog.checkpoint_choices(settings, visitor):
            raise
        raise UserError(NO_MODEL) from None


def predictor_for(settings: Settings, visitor: Visitor, model: str) -> Predictor:
    """The model's Predictor, or a UserError saying what to do instead."""
    return catalog.load_predictor(checked_model(settings, visitor, model))


def val_root(predictor: Predictor) -> str:
    """The model's dataset folder, or a UserError when its val images are not on this server."""
    root = predictor.checkpoint.meta.get("dataset", {}).get("root")
    if not root or not Path(root, "val").is_dir():
        raise UserError(f"This model's dataset ({root or 'unknown'}) is no longer on this server, "
                        "so there are no val images to use.")
    return root
