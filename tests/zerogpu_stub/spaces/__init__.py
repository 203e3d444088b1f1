"""A stand-in for Hugging Face's `spaces` package, as ZeroGPU runs it, for tests.

`spaces.GPU` (in ZeroGPU mode, SPACES_ZERO_GPU=true) runs each call of the decorated function
in a process forked from the app, passes arguments and results through pickling queues, and
closes the task when the caller stops reading (what the real package does; see spaces/zero/
wrappers.py). Here the forked worker has no GPU either: CUDA is hidden from it, so nothing can
silently depend on one. Every call is logged (pid, duration asked) to $ZEROGPU_STUB_LOG.
"""
import functools
import inspect
import json
import multiprocessing
import os
import traceback

_fork = multiprocessing.get_context("fork")


def _log(**entry):
    path = os.environ.get("ZEROGPU_STUB_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def _worker(task, args, kwargs, results, stop):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    _log(event="worker", pid=os.getpid())
    try:
        for item in task(*args, **kwargs):
            if stop.is_set():
                break
            results.put(("item", item))
        results.put(("end", None))
    except BaseException as e:  # the real package re-raises the worker's error in the app
        results.put(("error", (type(e).__name__, str(e), traceback.format_exc())))


def GPU(task=None, *, duration=None, size=None):
    if task is None:
        return functools.partial(GPU, duration=duration, size=size)
    if not inspect.isgeneratorfunction(task):
        raise NotImplementedError("this stand-in only wraps generator functions")

    @functools.wraps(task)
    def handler(*args, **kwargs):
        asked = duration(*args, **kwargs) if callable(duration) else duration
        _log(event="call", pid=os.getpid(), duration=asked)
        results, stop = _fork.Queue(), _fork.Event()
        process = _fork.Process(target=_worker, args=(task, args, kwargs, results, stop), daemon=True)
        process.start()
        try:
            while True:
                kind, value = results.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise RuntimeError(f"ZeroGPU worker error: {value[0]}: {value[1]}")
                yield value
        except GeneratorExit:
            stop.set()
            raise
        finally:
            process.join(timeout=60)

    handler.zerogpu = None
    return handler
