"""Live predictions in the Predict tab: a webcam classified continuously, and a pasted image.

The webcam runs in the visitor's browser: the page asks once for the chosen model as ONNX
(exported on demand and cached next to the checkpoint, handed over as a copy to this visitor only,
catalog deciding who may have it), then classifies every frame itself with onnxruntime-web
(static/classify.js; see webpage.py for where the runtime's files come from). Frames never leave
the browser, so a live page costs the server nothing after that, and runs as fast as the visitor's
machine does.

Where the runtime cannot start (an old browser, no way to fetch its files), the page says so and
shows the server-side stream instead, as before. Gradio runs a streaming input as one long event:
the page sends a frame every `stream_every` seconds, and the server keeps only the newest one while the previous is being classified (a
frame that arrives meanwhile replaces the one waiting). So frames never queue up: the rate is
whatever the machine sustains, up to 1 / STREAM_EVERY per page.
"""
from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import torch

from .. import catalog
from ..catalog import Settings
from ..errors import MissingExtra, UserError
from ..webpage import ORT_CDN, STATIC, local_runtime, model_description, runtime_config
from ..housekeeping import Housekeeper
from .common import ModelPickers, Visitors, predictor_for, untrusted_image

STREAM_EVERY = 0.2  # seconds between frames a page sends: 5 frames a second at most
# Seconds a page's stream lasts (the webcam's Record button starts another): an open stream holds
# one of LIVE_STREAMS places, even while its page sends nothing.
TIME_LIMIT = 60
LIVE_STREAMS = 8
TOP_CLASSES = 3


def _one_torch_thread() -> None:
    """Run once in the live thread: torch uses one thread here, so live predictions take one core
    and a training run keeps the others. torch.set_num_threads also sets the default that threads
    started later pick up (a training run's), so a helper thread puts that default back; the
    live thread keeps its own count of one."""
    usual = torch.get_num_threads()
    torch.set_num_threads(1)
    restore = threading.Thread(target=torch.set_num_threads, args=(usual,))
    restore.start()
    restore.join()


# The in-browser view: classify.js finds its parts by data-role.
BROWSER_LIVE = """<div class="bees-ants-live"><div class="bees-ants-title">Webcam, classified in this browser</div>
<div><button data-role="start" class="lg secondary" disabled>Start webcam</button>
<button data-role="stop" class="lg secondary" disabled>Stop</button></div>
<video data-role="video" muted playsinline></video>
<ol data-role="top"></ol>
<div data-role="fps"></div>
<div data-role="status">Classified in this browser with onnxruntime-web: frames never leave it.</div>
</div>"""
BROWSER_LIVE_CSS = """.bees-ants-title { font-size: var(--block-label-text-size); color: var(--block-label-text-color); margin-bottom: 4px; }
video { width: 100%; max-height: 300px; background: var(--block-background-fill); border-radius: 6px; }
button { padding: 4px 12px; margin: 0 4px 6px 0; }
ol { padding: 0; list-style: none; margin: 6px 0; }
ol li { position: relative; padding: 4px 8px; margin: 3px 0; border-radius: 4px; overflow: hidden;
        background: var(--background-fill-secondary); }
ol li span:last-child { position: relative; }
.bees-ants-bar { position: absolute; left: 0; top: 0; bottom: 0; background: var(--color-accent-soft); }
[data-role=fps], [data-role=status] { color: var(--body-text-color); font-size: 0.9em; }"""
# The Start button asks the server for the model (trigger), then the .success() step loads it.
# The buttons start disabled (BROWSER_LIVE) and this enables them once their listeners are attached.
BROWSER_LIVE_JS = """window.beesAntsRuntime = RUNTIME;
const status = element.querySelector("[data-role=status]");
element.querySelector("[data-role=start]").addEventListener("click", () => {
  status.textContent = "Fetching the model (the first time, the server exports it to ONNX)…";
  trigger("click");
});
element.querySelector("[data-role=stop]").addEventListener("click", () => window.beesAnts && beesAnts.stopCamera(element));
// Enabled once they listen: the tab's content (and this script) comes in after the tab is shown,
// and a click before then would be lost.
element.querySelectorAll("[data-role=start], [data-role=stop]").forEach((b) => { b.disabled = false; });"""
# The model's file and description -> the runtime and the camera started, or why not (the next
# step shows the server's stream then).
START_IN_BROWSER_JS = """async (file, info) => {
  const root = document.getElementById("browser-live"), status = root.querySelector("[data-role=status]");
  try {
    if (!window.beesAnts) throw new Error("classify.js did not load");
    if (info.error) throw new Error(info.error);
    const backend = await beesAnts.load(file.url, info);
    status.textContent = `${info.arch} in this browser (onnxruntime-web, ${backend === "webgpu" ? "WebGPU" : "WebAssembly"}): frames never leave it.`;
    beesAnts.startCamera(root, TOP).catch((e) => { status.textContent = `Webcam: ${e.message || e}`; });
    return {...info, backend};
  } catch (e) {
    status.textContent = `onnxruntime-web could not start here (${e.message || e}): use the webcam below, classified on the server.`;
    return {...info, backend: null};
  }
}"""
NOT_HANDED_JS = """() => {
  document.querySelector("#browser-live [data-role=status]").textContent = "No model to run: see the message, then Start again.";
}"""
STOP_IN_BROWSER_JS = """() => {
  const root = document.getElementById("browser-live");
  if (window.beesAnts && root) { beesAnts.stopCamera(root); root.querySelector("[data-role=top]").replaceChildren(); }
}"""


def runtime_location() -> tuple[str, list[Path]]:
    """Where pages fetch onnxruntime-web (the CDN, or the app itself when BEES_ANTS_ORT_DIR is
    set), and the folders the app must serve for that: classify.js's and the local runtime's,
    public files only."""
    folder = local_runtime()
    if folder is None:
        return ORT_CDN, [STATIC]
    return f"gradio_api/file={folder}/", [STATIC, folder]


# Every page's frames take turns in this one thread (only the newest frame of each page waits).
LIVE_THREAD = ThreadPoolExecutor(1, thread_name_prefix="bees_ants-live", initializer=_one_torch_thread)


class LiveView:
    """Rendered where it is created (the Predict tab), classifying with the Predict tab's model."""

    def __init__(self, settings: Settings, visitors: Visitors, models: ModelPickers, housekeeper: Housekeeper):
        self.settings, self.visitors, self.housekeeper = settings, visitors, housekeeper
        base, served = runtime_location()
        gr.set_static_paths(served)
        head = f'<script src="gradio_api/file={STATIC / "classify.js"}"></script>'
        with gr.Accordion("Live predictions: webcam and clipboard", open=True, elem_id="live"):
            with gr.Row():
                browser = gr.HTML(BROWSER_LIVE, css_template=BROWSER_LIVE_CSS, head=head, padding=False,
                                  js_on_load=BROWSER_LIVE_JS.replace("RUNTIME", json.dumps(runtime_config(base))),
                                  elem_id="browser-live")
                pasted = untrusted_image(sources=["clipboard", "upload"], height=300,
                                         label="Paste an image (clipboard) or drop one", elem_id="paste")
                pasted_label = gr.Label(num_top_classes=TOP_CLASSES, label="Pasted image: top classes",
                                        elem_id="paste-label")
            with gr.Row(visible=False) as self.server_live:  # shown when the browser cannot run the model
                camera = untrusted_image(sources=["webcam"], streaming=True, height=300,
                                         label="Webcam (classified on the server)", elem_id="live-camera")
                live = gr.Label(num_top_classes=TOP_CLASSES, label="Webcam: top classes", elem_id="live-label")
        model_file = gr.File(visible=False, elem_id="live-model-file")
        model_info = gr.JSON(visible=False, elem_id="live-model-info")  # the description of the model the page has
        handed = browser.click(self.hand_over_model, [models.predict, model_info], [model_file, model_info],
                               api_visibility="private", concurrency_id="inference")
        handed.success(None, [model_file, model_info], model_info, js=START_IN_BROWSER_JS.replace("TOP", str(TOP_CLASSES))
                       ).then(self.runtime_started, model_info, self.server_live, api_visibility="private")
        handed.failure(None, js=NOT_HANDED_JS)  # the toast says why
        models.predict.change(None, js=STOP_IN_BROWSER_JS)  # the camera goes until Start asks for the new model
        camera.stream(self.classify_frame, [models.predict, camera], live, stream_every=STREAM_EVERY,
                      time_limit=TIME_LIMIT, concurrency_limit=LIVE_STREAMS, concurrency_id="live",
                      show_progress="hidden", api_visibility="private")
        pasted.change(self.classify_frame, [models.predict, pasted], pasted_label, api_name="classify_one",
                      concurrency_id="inference")

    def hand_over_model(self, model: str, held: dict | None, request: gr.Request,
                        profile: gr.OAuthProfile | None) -> tuple:
        """The visitor's model as ONNX for their browser, with its class names and preprocessing;
        the file is left out when the page already holds this very export (`held`'s key)."""
        try:
            visitor = self.visitors.of(request, profile)
            onnx = catalog.exported_onnx(self.settings, visitor, model)
        except MissingExtra as e:  # no ONNX here: the page streams to the server instead
            return gr.skip(), {"error": str(e)}
        except UserError as e:
            raise gr.Error(str(e).replace("**", "")) from None
        key = f"{Path(onnx).name}@{os.path.getmtime(onnx)}"
        info = {**model_description(onnx), "key": key}
        if held and held.get("key") == key:
            return gr.skip(), info
        return self.housekeeper.download_copy(visitor, onnx), info  # a copy: the weights folder is never served by URL

    def runtime_started(self, info: dict | None) -> gr.Row:
        """The server's stream, shown only when the browser could not run the model."""
        return gr.Row(visible=not (info or {}).get("backend"))

    def classify_frame(self, model: str, image, request: gr.Request, profile: gr.OAuthProfile | None):
        """A frame or a pasted image, as a file (decoded here, with the predictor's checks) -> its
        top classes with their confidences."""
        if image is None:
            return None
        try:
            predictor = predictor_for(self.settings, self.visitors.of(request, profile), model)
        except UserError as e:
            raise gr.Error(str(e).replace("**", "")) from None  # a toast shows no markdown
        prediction = LIVE_THREAD.submit(predictor.predict, [image], names=["image"]).result()[0]
        if prediction.error:
            raise gr.Error(f"Not classified: {prediction.error}")
        return prediction.probabilities
