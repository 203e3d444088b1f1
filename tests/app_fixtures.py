"""Launching the real app in-process for the client and browser tests."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

from gradio_client import Client  # noqa: E402

from bees_ants.catalog import Settings  # noqa: E402
from conftest import COLOURS, IMAGE_SIZE, free_port, make_dataset, write_image, write_zip  # noqa: E402


def app_settings(root: Path) -> Settings:
    """A server offering the tiny two-class set and a one-class set that cannot train; the data
    root is empty, so the tutorial's set shows as "downloaded on first use". Runs train at the
    tests' IMAGE_SIZE, as BEES_ANTS_IMAGE_SIZE would make them."""
    tiny = make_dataset(root / "tiny")
    for split in ("train", "val"):
        write_image(root / "one_class" / split / "ants" / "a.png", COLOURS["ants"])
    (root / "data").mkdir()
    return Settings(data_root=root / "data", dataset_dirs=(tiny, root / "one_class"),
                    weights_dir=root / "weights", image_size=IMAGE_SIZE)


def dataset_zip(path: Path, sizes: dict[str, int], extra: dict[str, bytes] | None = None) -> Path:
    """What a user uploads: a zip of class folders of coloured images (`sizes` per class), plus `extra`."""
    members = {}
    for k, (cls, n) in enumerate(sizes.items()):
        for i in range(n):
            image = write_image(path.parent / f"{path.stem}-images" / cls / f"{i}.png", COLOURS[cls], seed=100 * k + i)
            members[f"{cls}/{cls}_{i}.png"] = image.read_bytes()
    return write_zip(path, {**members, **(extra or {})})


@contextmanager
def running_app(settings: Settings, **launch_options):
    """The app served on a free local port; yields its URL."""
    from bees_ants.runner import settle_long_lived_objects
    from bees_ants.ui import CSS, agent_tools_only, build_app

    app = build_app(settings)
    settle_long_lived_objects()  # as app.py does
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                           quiet=True, ssr_mode=False, css=CSS, show_error=True,
                           app_kwargs={"lifespan": agent_tools_only(app)}, **launch_options)
    try:
        yield url
    finally:
        app.close()


def api_client(url: str, **options) -> Client:
    """A gradio_client for an app served here. The app is plain http on 127.0.0.1, so there is no
    certificate to check; with checking on, httpx loads the CA bundle again for every request
    gradio_client sends (each opens a connection of its own): 7.5% of the suite's sampled CPU time."""
    return Client(url, verbose=False, ssl_verify=False, **options)


class FixedJob:
    """Stands in for the job manager: the visitor's job changes only when the test says so."""
    request_bound = False

    def __init__(self, job):
        self.job = job

    def latest(self, owner):
        return self.job
