"""Live predictions in the Predict tab: a webcam stream classified continuously, and a pasted image.

Gradio runs a streaming input as one long event: the page sends a frame every `stream_every`
seconds, and the server keeps only the newest one while the previous is being classified (a
frame that arrives meanwhile replaces the one waiting). So frames never queue up: the rate is
whatever the machine sustains, up to 1 / STREAM_EVERY per page.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import torch

from ..catalog import Settings
from ..errors import UserError
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


# Every page's frames take turns in this one thread (only the newest frame of each page waits).
LIVE_THREAD = ThreadPoolExecutor(1, thread_name_prefix="bees_ants-live", initializer=_one_torch_thread)


class LiveView:
    """Rendered where it is created (the Predict tab), classifying with the Predict tab's model."""

    def __init__(self, settings: Settings, visitors: Visitors, models: ModelPickers):
        self.settings, self.visitors = settings, visitors
        with gr.Accordion("Live predictions: webcam and clipboard", open=True, elem_id="live"):
            with gr.Row():
                camera = untrusted_image(sources=["webcam"], streaming=True, height=300,
                                  label="Webcam (classified continuously)", elem_id="live-camera")
                live = gr.Label(num_top_classes=TOP_CLASSES, label="Webcam: top classes", elem_id="live-label")
                pasted = untrusted_image(sources=["clipboard", "upload"], height=300,
                                  label="Paste an image (clipboard) or drop one", elem_id="paste")
                pasted_label = gr.Label(num_top_classes=TOP_CLASSES, label="Pasted image: top classes",
                                        elem_id="paste-label")
        camera.stream(self.classify_frame, [models.predict, camera], live, stream_every=STREAM_EVERY,
                      time_limit=TIME_LIMIT, concurrency_limit=LIVE_STREAMS, concurrency_id="live",
                      show_progress="hidden", api_visibility="private")
        pasted.change(self.classify_frame, [models.predict, pasted], pasted_label, api_name="classify_one",
                      concurrency_id="inference")

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
