"""A stand-in for Hugging Face's `spaces` package as ZeroGPU runs it (0.51.x), for tests.

What the real package does, and this stand-in too (see spaces/zero/ in the real source):
- imported with SPACES_ZERO_GPU=true, it patches torch in the app process (zero/torch/patching.py):
  `torch.cuda.is_available()` is True, `device_count()` 1, the device name a GPU's, and any
  low-level CUDA init (pinning memory, a tensor sent to CUDA) raises. So code that asks torch
  whether CUDA is there, and then uses it, fails in the app process, as it does on a Space.
  Importing it after CUDA was initialised is refused, as the real package refuses.
- `spaces.GPU` asks the scheduler for `duration` seconds against the visitor's quota (the
  request's X-IP-Token header; none: the Space's own), refusing with the real package's gr.Error
  titles and messages (zero/client.py). Here the quota is $ZEROGPU_STUB_QUOTA_LEFT seconds when
  set, unlimited otherwise.
- a call runs in a worker process forked from the app and kept for the next calls while it lives
  (zero/wrappers.py): its first call undoes the torch patch (here: and hides CUDA, this machine's
  worker has no GPU either); every call carries Gradio's request context over (event id,
  in-listener flag, progress: GradioPartialContext), arguments and results cross by pickling, a
  caller that stops reading stops the task after its next item, an exception becomes a gr.Error
  in the app (a worker's gr.Error as it is; anything else "ZeroGPU worker error" naming its
  class), and a worker that dies reads as "GPU task aborted".
Only generator functions are wrapped (what the app decorates). Every schedule and every call a
worker runs is logged (pid, duration asked, event id) to $ZEROGPU_STUB_LOG.
"""
import functools
import inspect
import json
import multiprocessing
import os
import threading
import traceback
from datetime import timedelta
from queue import Queue

import torch

_fork = multiprocessing.get_context("fork")
ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
# The real package's texts (zero/client.py, zero/torch/patching.py).
TOKENS_SETTINGS_URL = "https://huggingface.co/settings/tokens"
EXAMPLES_RETRY_MESSAGE = "Try re-running outside of examples if it happened after clicking one"
CUDA_INIT_MESSAGE = ("Low-level CUDA init (`torch._C._cuda_init`) reached. This means ZeroGPU's PyTorch CUDA "
                     "emulation mode did not intercept a CUDA operation in your code.\n"
                     "Check this stacktrace to locate the trigger.")


def _log(**entry):
    path = os.environ.get("ZEROGPU_STUB_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


# -- the torch patch ---------------------------------------------------------------------------------

def _cuda_init_raise():
    raise RuntimeError(CUDA_INIT_MESSAGE)


_ORIGINAL = {name: getattr(torch.cuda, name) for name in
             ("is_available", "device_count", "current_device", "get_device_name", "get_device_capability", "synchronize")}
_ORIGINAL_CUDA_INIT = torch._C._cuda_init


def _patch():
    torch._C._cuda_init = _cuda_init_raise
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 1
    torch.cuda.current_device = lambda: 0
    torch.cuda.get_device_name = lambda *args, **kwargs: "NVIDIA H200 MIG 3g.71gb"
    torch.cuda.get_device_capability = lambda *args, **kwargs: (9, 0)
    torch.cuda.synchronize = lambda *args: None


def _unpatch():
    torch._C._cuda_init = _ORIGINAL_CUDA_INIT
    for name, fn in _ORIGINAL.items():
        setattr(torch.cuda, name, fn)


if ZERO_GPU:
    if torch.cuda.is_initialized():
        raise RuntimeError("CUDA has been initialized before importing the `spaces` package. "
                           "Try importing `spaces` before any other CUDA-related package.")
    _patch()


# -- the scheduler -----------------------------------------------------------------------------------

def _error(title, message):
    import gradio as gr
    return gr.Error(message, title=title, print_exception=False)


def _schedule(request, duration):
    """Refuse like the real scheduler when the visitor's quota cannot cover `duration` seconds."""
    headers = getattr(request, "headers", None) or {}
    token = headers.get("x-ip-token")
    _log(event="schedule", pid=os.getpid(), duration=duration, request=request is not None, token=token is not None)
    left = os.environ.get("ZEROGPU_STUB_QUOTA_LEFT")
    if left is None or duration <= int(left):
        return
    if token is None:
        raise _error("ZeroGPU quota exceeded", f"Space app has reached its GPU limit. {EXAMPLES_RETRY_MESSAGE}")
    wait = timedelta(hours=3, minutes=12, seconds=5)  # when the quota has come back enough
    message = (f"You have exceeded your ZeroGPU quota ({duration}s requested vs. {left}s left). "
               f"Try again in {wait}. ")
    if headers.get("x-gradio-user") != "app":  # an API call: the real one adds where to get a token
        message += f"Authenticate with a Hugging Face token for more quota - {TOKENS_SETTINGS_URL}"
    raise _error("ZeroGPU quota exceeded", message)


# -- Gradio's request context, as the real package carries it (zero/gradio.py) -------------------------

def _partial_context():
    from gradio.context import LocalContext
    return (LocalContext.event_id.get(None), LocalContext.in_event_listener.get(False),
            LocalContext.progress.get(None))


def _apply_context(context):
    from gradio.context import LocalContext
    event_id, in_event_listener, progress = context
    LocalContext.event_id.set(event_id)
    LocalContext.in_event_listener.set(in_event_listener)
    LocalContext.progress.set(progress)


# -- the worker process --------------------------------------------------------------------------------

class _Worker:
    """A forked process that runs the task's calls one after the other, until it dies."""

    def __init__(self, task):
        self.args, self.results, self.stop = _fork.SimpleQueue(), _fork.SimpleQueue(), _fork.Event()
        self.process = _fork.Process(target=_serve, args=(task, self.args, self.results, self.stop), daemon=True)
        self.process.start()
        threading.Thread(target=self._report_death, daemon=True).start()

    def _report_death(self):
        self.process.join()
        self.results.put(("aborted", None))


def _serve(task, args, results, stop):
    initialized = False
    while True:
        (call_args, call_kwargs), context = args.get()
        stop.clear()
        if not initialized:  # the real worker_init: torch unpatched, then its GPU attached
            _unpatch()
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # this stand-in's worker has no GPU
            initialized = True
        _apply_context(context)
        _log(event="worker", pid=os.getpid(), event_id=context[0])

        def iterate():
            gen = task(*call_args, **call_kwargs)
            while True:
                try:
                    item = next(gen)
                except StopIteration:
                    break
                except Exception as e:
                    results.put(("error", _exception_result(e)))
                    break
                if stop.is_set():
                    gen.close()
                    break
                results.put(("item", item))
        thread = threading.Thread(target=iterate)  # the real one runs it in a fresh thread too
        thread.start()
        thread.join()
        results.put(("end", None))


def _exception_result(e):
    import gradio as gr
    return (type(e).__name__, traceback.format_exc(), e if isinstance(e, gr.Error) else None)


# -- the decorator -------------------------------------------------------------------------------------

def GPU(task=None, *, duration=None, size=None):
    if task is None:
        return functools.partial(GPU, duration=duration, size=size)
    if not ZERO_GPU:
        return task
    if not inspect.isgeneratorfunction(task):
        raise NotImplementedError("this stand-in only wraps generator functions")
    idle: list[_Worker] = []  # the real package keeps one worker per GPU; this machine has one

    @functools.wraps(task)
    def handler(*args, **kwargs):
        from gradio.context import LocalContext
        asked = duration(*args, **kwargs) if callable(duration) else (duration or 60)
        _log(event="call", pid=os.getpid(), duration=asked)
        _schedule(LocalContext.request.get(None), asked)
        worker = idle.pop() if idle and idle[-1].process.is_alive() else _Worker(task)
        worker.args.put(((args, kwargs), _partial_context()))
        # Like the real package, a thread reads the worker's results to their end, so a worker
        # whose caller stopped reading is idle (and reused) once its task has stopped.
        received = Queue()

        def drain():
            while True:
                kind, value = worker.results.get()
                received.put((kind, value))
                if kind == "end":
                    idle.append(worker)
                if kind in ("end", "error", "aborted"):
                    return
        threading.Thread(target=drain, daemon=True).start()
        while True:
            kind, value = received.get()
            if kind == "end":
                return
            if kind == "aborted":
                raise _error("ZeroGPU worker error", "GPU task aborted")
            if kind == "error":
                error_cls, trace, gradio_error = value
                if gradio_error is not None:
                    raise gradio_error
                print(trace)
                raise _error("ZeroGPU worker error", error_cls)
            try:
                yield value
            except GeneratorExit:
                worker.stop.set()
                raise

    handler.zerogpu = None
    return handler
