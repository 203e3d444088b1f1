"""Soak run: the app as a public Space lives it, for minutes on end, its disk, memory, open files and
threads watched while visitors use it the way real clients can.

    python -m bench.soak --visitors 4 --minutes 20      # bench/results/soak.json, and a table
    python -m bench.soak --visitors 2 --minutes 1       # a quick look

The app runs as it is deployed (`python app.py`, in a process of its own, its settings from the
environment) on a scratch folder, with short budgets and lifetimes (SHORT_BUDGETS: 2 datasets and 2
models per visitor, 2 downloads kept, downloads and shown images kept 1 minute, uploads 5 (longer
than a request waits in the queue here, or its upload would be gone when it runs), anonymous
visitors expiring after 3 idle minutes, sweeps every 20 s), so that whatever bounds disk and memory
shows within minutes. Against it, at once:
- API visitors (gradio_client, each with its own X-Bees-Ants-Key), looping: build a dataset (a zip
  imported, or, every other loop, the dataset builder's endpoints) -> train (MobileNetV2 from
  random weights, fixed extractor, 2 epochs, on 24 tiny images) -> predict -> explain (Grad-CAM) ->
  export ONNX -> download the checkpoint. A refusal by a budget is answered as a person would:
  delete the oldest dataset or model, then again. Every CHURN loops a visitor takes a new key, as
  new visitors come and old ones leave: what the old key left behind must expire.
- MCP agents (the `mcp` client, each sending the key of one API visitor, so they see its models):
  a session per round of list_models, classify (a new picture each time) and training_status.
- a signed-in stand-in: an API visitor signed in with Hugging Face through Gradio's own local
  sign-in (outside a Space Gradio signs in as the owner of HF_TOKEN, asking the Hub's whoami; a
  local stand-in answers that), holding the session cookie that sign-in sets.
- a flood: one client calling /train every FLOOD_EVERY seconds. Its refusals (one job per
  visitor, then its model budget) are counted as refusals, not errors.
All clients come from 127.0.0.1, one network address, so the per-address share is off here
(BEES_ANTS_MAX_PER_ADDRESS=0; tests/test_jobs.py covers it); the flood is one identity.

Counted per endpoint: calls, errors (an exception, or an answer that is neither a result nor
advice), refusals (advice: a budget, the one-job rule), and latency (p50/p95; /train's includes the
wait in the queue and the whole run). Sampled every few seconds: the app process's RSS, open file
descriptors and threads, and the bytes and files under each folder the app writes (data root,
weights folder, Gradio's cache folder with the app's own temp folders in it, its system temp folder).
`soak()` is the same run for tests (tests/test_soak.py: 10 s, without the ONNX export).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import itertools
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections import Counter, defaultdict
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SHORT_BUDGETS = {
    "BEES_ANTS_MAX_DATASETS": "2", "BEES_ANTS_MAX_MODELS": "2", "BEES_ANTS_KEEP_DOWNLOADS": "2",
    "BEES_ANTS_TEMP_MINUTES": "1", "BEES_ANTS_UPLOAD_MINUTES": "5", "BEES_ANTS_SWEEP_MINUTES": "0.34",
    "BEES_ANTS_IDLE_DAYS": str(3 / 1440), "BEES_ANTS_MAX_RUN_SECONDS": "120", "BEES_ANTS_MAX_PER_ADDRESS": "0",
}
ARCH = "mobilenet_v2"  # the smallest backbone offered: a CPU trains it from random weights in seconds
COLOURS = {"ants": (200, 60, 40), "bees": (40, 70, 210)}  # colour separates the classes even for random weights
IMAGES_PER_CLASS = 12  # per loop's dataset; the importer splits 80/20
CHURN = 4  # loops before an API visitor becomes a new visitor (a new key)
FLOOD_EVERY = 0.5  # seconds between the flood's /train calls
AGENT_PAUSE = 2.0  # seconds between an agent's rounds
SAMPLE_EVERY = 5.0  # seconds between samples of the app process
MAX_POINTS = 120  # samples kept in the JSON (evenly thinned)
ADVICE = "⚠"  # how the app's answers mark advice (a refusal) rather than a result


class Failed(Exception):
    """An answer that is neither a result nor advice: counted as an error, and the loop starts over."""


# -- what is counted ------------------------------------------------------------------------------

class Tally:
    """Calls, latencies, errors and refusals per endpoint, from many threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = Counter()
        self.seconds: dict[str, list[float]] = defaultdict(list)  # of the calls that were answered
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.refusals: dict[str, Counter] = defaultdict(Counter)
        self.loops = Counter()  # per kind of client

    @contextmanager
    def call(self, endpoint: str):
        """Time the block as one call of `endpoint`; an exception in it is an error of that endpoint."""
        start = time.perf_counter()
        try:
            yield
        except Exception as e:
            self.answered(endpoint, None)
            self.error(endpoint, f"{type(e).__name__}: {e}")
            raise Failed(endpoint) from e
        self.answered(endpoint, time.perf_counter() - start)

    def answered(self, endpoint: str, seconds: float | None) -> None:
        """One call of `endpoint`, answered after `seconds` (None: it raised)."""
        with self.lock:
            self.calls[endpoint] += 1
            if seconds is not None:
                self.seconds[endpoint].append(seconds)

    def error(self, where: str, what: str) -> None:
        with self.lock:
            self.errors[where].append(what[-600:])

    def unexpected(self, where: str, e: Exception) -> None:
        self.error(where, "".join(traceback.format_exception(e)))

    def refused(self, endpoint: str, why: str) -> None:
        with self.lock:
            self.refusals[endpoint][reason(why)] += 1

    def table(self) -> dict:
        rows = {}
        for endpoint in sorted(set(self.seconds) | set(self.errors) | set(self.refusals)):
            times = sorted(self.seconds[endpoint])
            rows[endpoint] = {"calls": self.calls[endpoint], "errors": len(self.errors[endpoint]),
                              "refusals": sum(self.refusals[endpoint].values()),
                              "p50_s": round(percentile(times, 50), 3) if times else None,
                              "p95_s": round(percentile(times, 95), 3) if times else None,
                              "refusal_reasons": dict(self.refusals[endpoint]),
                              "first_errors": self.errors[endpoint][:5]}
        return rows


def reason(text: str) -> str:
    """A refusal's gist, so that counts group by kind: its first words, numbers as N."""
    text = text.replace("*", "").replace(ADVICE, "").strip()
    for mark in ("Not started:", "Not imported:", "Not created:"):
        text = text.split(mark, 1)[-1].strip()
    words = ["N" if any(c.isdigit() for c in word) else word for word in text.split()]
    return " ".join(words[:8]).rstrip(",;:")


def percentile(sorted_values: list[float], q: float) -> float:
    k = (len(sorted_values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


# -- what the clients send ------------------------------------------------------------------------

def picture(colour, seed: int, size=(64, 48)) -> bytes:
    """A PNG of noise around `colour`, different for every seed: every upload is new to the server."""
    rng = np.random.default_rng(seed)
    pixels = (rng.normal(0, 35, (size[1], size[0], 3)) + colour).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def write_pictures(folder: Path, seed: int, per_class: int) -> dict[str, list[Path]]:
    """`per_class` new pictures per class, as files: {class: [paths]}."""
    files = {}
    for k, (cls, colour) in enumerate(COLOURS.items()):
        files[cls] = []
        for i in range(per_class):
            path = folder / f"{cls}-{seed}-{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(picture(colour, seed * 1000 + k * 100 + i))
            files[cls].append(path)
    return files


def dataset_zip(path: Path, files: dict[str, list[Path]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for cls, paths in files.items():
            for p in paths:
                zf.write(p, f"{cls}/{p.name}")
    return path


def new_key() -> str:
    return secrets.token_urlsafe(32)


# -- the app under test ---------------------------------------------------------------------------

def local_client(url: str, **options):
    """A gradio_client for the app here: plain http on 127.0.0.1, so no certificate checks, which
    would load the CA bundle again for each request it sends (a connection each) and bill the
    clients' CPU to the machine the app is measured on."""
    from gradio_client import Client
    return Client(url, verbose=False, ssl_verify=False, **options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shared_dataset(root: Path) -> Path:
    """The tiny dataset every visitor may use (what the flood trains on)."""
    data = root / "shared-data"
    for split, n in (("train", 8), ("val", 4)):
        for k, (cls, colour) in enumerate(COLOURS.items()):
            for i in range(n):
                (data / split / cls).mkdir(parents=True, exist_ok=True)
                seed = 10_000 * (split == "val") + 100 * k + i
                (data / split / cls / f"{i}.png").write_bytes(picture(colour, seed))
    return data


def train_shared_model(data: Path, weights: Path) -> None:
    """A model of the shared weights folder: what an agent classifies with before its visitor has one."""
    from bees_ants.train import TrainConfig, TrainingRun
    list(TrainingRun(TrainConfig(data_dir=str(data), arch=ARCH, mode="fixed", epochs=1, batch_size=8,
                                 backbone_weights=None, out_dir=str(weights))))


class WhoAmI:
    """The Hub's /api/whoami-v2 for one user, on a local port: Gradio's local sign-in asks it once,
    at launch, who the owner of HF_TOKEN is, and signs every visitor in as that user."""

    def __init__(self, user: str):
        body = json.dumps({"type": "user", "name": user, "fullname": user, "avatarUrl": "", "orgs": []}).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200 if self.path.startswith("/api/whoami") else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class App:
    """`python app.py` in a process of its own on `root`, with `env` on top of SHORT_BUDGETS."""

    def __init__(self, root: Path, env: dict[str, str], signed_in_user: str | None):
        self.root = root
        self.folders = {"data root": root / "data", "weights": root / "weights", "gradio cache": root / "gradio",
                        "temp": root / "tmp"}
        for f in self.folders.values():
            f.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.whoami = None
        env = {**os.environ, **SHORT_BUDGETS, **env,
               "BEES_ANTS_DATA_ROOT": str(self.folders["data root"]),
               "BEES_ANTS_WEIGHTS_DIR": str(self.folders["weights"]),
               "GRADIO_TEMP_DIR": str(self.folders["gradio cache"]), "TMPDIR": str(self.folders["temp"]),
               "GRADIO_SERVER_PORT": str(self.port), "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_MCP_SERVER": "true"}
        if signed_in_user:  # Gradio's local sign-in: a LoginButton (OAUTH_CLIENT_ID) and a whoami to ask
            self.whoami = WhoAmI(signed_in_user)
            env.update(OAUTH_CLIENT_ID="soak", HF_TOKEN="hf_soak_stand_in", HF_ENDPOINT=self.whoami.url)
        self.log = open(root / "app.log", "w")
        self.process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)

    def wait_until_up(self, seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the app exited ({self.process.returncode}); see {self.root / 'app.log'}")
            try:
                if httpx.get(self.url, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the app did not answer within {seconds:.0f} s; see {self.root / 'app.log'}")
            time.sleep(0.5)

    def sample(self) -> dict:
        """The app process now: RSS, open files, threads, and bytes and files per folder it writes."""
        proc = Path(f"/proc/{self.process.pid}")
        status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
        point = {"rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1), "threads": int(status["Threads"]),
                 "fds": len(os.listdir(proc / "fd"))}
        for name, folder in self.folders.items():
            size, files = usage(folder)
            point[f"{name} MB"] = round(size / 2**20, 2)
            point[f"{name} files"] = files
        return point

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        if self.whoami:
            self.whoami.server.shutdown()
            self.whoami.server.server_close()


def usage(folder: Path) -> tuple[int, int]:
    """Bytes (each inode once) and entries (files and folders) under `folder`."""
    seen, size, entries = set(), 0, 0
    for dirpath, dirnames, filenames in os.walk(folder):
        entries += len(dirnames) + len(filenames)
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_size
    return size, entries


# -- the clients ----------------------------------------------------------------------------------

class ApiVisitor:
    """A gradio_client visitor looping build -> train -> predict -> explain -> export -> download."""

    kind = "api visitor"

    def __init__(self, app: App, tally: Tally, number: int, scratch: Path, exports: bool = True, churn: bool = True):
        self.app, self.tally, self.number, self.exports, self.churn = app, tally, number, exports, churn
        self.scratch = scratch / f"{self.kind.replace(' ', '-')}-{number}"
        self.key = new_key()
        self.datasets: list[str] = []  # own datasets and models, oldest first: what a budget refusal deletes
        self.models: list[str] = []
        self.client = self.connect()

    def connect(self):
        return local_client(self.app.url, headers={"X-Bees-Ants-Key": self.key},
                            download_files=str(self.scratch / "downloads"))

    def run(self, until: float) -> None:
        for loop in itertools.count():
            if time.monotonic() >= until:
                return
            if self.churn and loop and loop % CHURN == 0:  # someone new; the old key's things are left to expire
                self.key, self.datasets, self.models = new_key(), [], []
                self.client = self.connect()
            try:
                self.loop(loop)
                self.tally.loops[self.kind] += 1
            except Failed:
                time.sleep(1)
            except Exception as e:  # an answer of a shape this client did not expect
                self.tally.unexpected(self.kind, e)
                time.sleep(1)
            shutil.rmtree(self.scratch, ignore_errors=True)  # what this client downloaded and sent

    def call(self, endpoint: str, *args, **kwargs) -> dict:
        """The endpoint's outputs by the elem_id of the widget each updates (their order is the page's)."""
        with self.tally.call(endpoint):
            outputs = self.client.predict(*args, api_name=f"/{endpoint}", **kwargs)
        return dict(zip(output_ids(self.client, endpoint), outputs if isinstance(outputs, tuple) else (outputs,)))

    def loop(self, loop: int) -> None:
        from gradio_client import handle_file
        seed = self.number * 100_000 + loop * 10 + random.randrange(10)
        files = write_pictures(self.scratch / "pictures", seed, IMAGES_PER_CLASS)
        dataset = self.build_dataset(loop, files)
        model = self.train(dataset)
        shown = [handle_file(str(p)) for p in (files["ants"][:2] + files["bees"][:2])]
        with self.tally.call("predict"):
            gallery, _, problems, table = self.client.predict(model, shown, api_name="/predict")
        unread = [row for row in table["data"] if row[-1]]  # its last column: why a file could not be read
        if len(gallery) != len(shown) or len(table["data"]) != len(shown) or unread:
            self.fail("predict", f"{len(gallery)} pictures for {len(shown)} files; problems: {problems!r}")
        explained = value(self.call("explain", model, shown[:2])["explained"]) or []
        if len(explained) != 2:
            self.fail("explain", f"{len(explained)} heatmaps for 2 files")
        takeaways = (("export_onnx", ".onnx"),) * self.exports + (("download_checkpoint", ".pt"),)
        for endpoint, suffix in takeaways:
            got = value(self.call(endpoint, model)["model-file"])
            if not (got and Path(got).suffix == suffix and Path(got).stat().st_size > 0):
                self.fail(endpoint, f"no {suffix} file handed over: {got!r}")

    def build_dataset(self, loop: int, files: dict[str, list[Path]]) -> str:
        """A new dataset of this visitor's: a zip imported, or every other loop made with the builder."""
        from gradio_client import handle_file
        for _ in range(3):
            if loop % 2 == 0:
                archive = dataset_zip(self.scratch / f"set-{loop}.zip", files)
                out = self.call("import_dataset", handle_file(str(archive)))
                answer, endpoint = out["import-info"], "import_dataset"
            else:
                for cls in self.call("draft", None)["draft-class"]["choices"]:  # start over from an empty draft
                    self.call("draft_remove", cls[1] if isinstance(cls, (list, tuple)) else cls)
                for cls, paths in files.items():
                    self.call("draft_add_class", cls)
                    added = self.call("draft_add_images", cls, [handle_file(str(p)) for p in paths])["draft-added"]
                    if ADVICE in added:
                        self.fail("draft_add_images", added)
                out = self.call("draft_create", f"built-{loop}")
                answer, endpoint = out["draft-created"], "draft_create"
            if not answer.startswith(ADVICE):
                self.datasets.append(out["dataset"]["value"])
                return self.datasets[-1]
            self.tally.refused(endpoint, answer)
            if "datasets, the most" not in answer or not self.datasets:
                self.fail(endpoint, answer)
            deleted = self.call("delete_dataset", self.datasets.pop(0))["dataset-deleted"]
            if deleted.startswith(ADVICE):
                self.fail("delete_dataset", deleted)
        self.fail(endpoint, "still refused after deleting")

    def train(self, dataset: str) -> str:
        """A run on `dataset` to its end: the model it made. A refusal is waited out, or (the model
        budget) answered by deleting the oldest model."""
        args = dict(dataset=dataset, arch=ARCH, mode="fixed", backbone="none", epochs=2, lr=0.01, momentum=0.9,
                    batch_size=8, step_size=7, gamma=0.1, frozen_epochs=1)
        for _ in range(60):
            outputs = self.call("train", **args)  # streams until the run is over; the last outputs
            notice = value(outputs.get("notice")) or ""
            if not notice.startswith(ADVICE):
                if "Finished" not in (value(outputs.get("status")) or ""):
                    self.fail("train", f"the run ended with: {outputs.get('status')!r}")
                self.models.append(outputs["model"]["value"])
                return self.models[-1]
            self.tally.refused("train", notice)
            if "models, the most" in notice and self.models:
                deleted = self.call("delete_model", self.models.pop(0))["model-deleted"]
                if deleted.startswith(ADVICE):
                    self.fail("delete_model", deleted)
            elif "already have a training job" in notice or "queue" in notice:
                time.sleep(2)
            else:
                self.fail("train", notice)
        self.fail("train", "refused for two minutes")

    def fail(self, endpoint: str, why: str):
        self.tally.error(endpoint, why)
        raise Failed(endpoint)


class SignedInVisitor(ApiVisitor):
    """An API visitor signed in with Hugging Face: Gradio's sign-in sets a session cookie, which
    this client sends with every request instead of a key. Keeps its account, so no churn."""

    kind = "signed-in visitor"

    def __init__(self, app: App, tally: Tally, number: int, scratch: Path, exports: bool = True):
        super().__init__(app, tally, number, scratch, exports, churn=False)

    def connect(self):
        with httpx.Client(base_url=self.app.url, follow_redirects=False) as http:
            callback = http.get("login/huggingface").headers["location"]
            cookie = http.get(callback).cookies.get("session")
        if not cookie:
            raise SystemExit("the local sign-in set no session cookie")
        return local_client(self.app.url, headers={"Cookie": f"session={cookie}"},
                            download_files=str(self.scratch / "downloads"))


def value(output):
    """What a widget shows: a handler that returns a widget (to change more than its value) reaches
    the client as an update, a dict with the value in it."""
    return output.get("value") if isinstance(output, dict) and output.get("__type__") == "update" else output


def output_ids(client, endpoint: str) -> list[str]:
    """The elem_ids of an endpoint's outputs, in the order the API returns them."""
    components = {c["id"]: c for c in client.config["components"]}
    dependency = next(d for d in client.config["dependencies"] if d["api_name"] == endpoint)
    return [components[i]["props"].get("elem_id") for i in dependency["outputs"] if not components[i]["skip_api"]]


class Agent:
    """An MCP agent sending the key of one API visitor: rounds of list_models, classify (a new
    picture each time, with that visitor's newest model, else a shared one) and training_status."""

    def __init__(self, app: App, tally: Tally, visitor: ApiVisitor):
        self.app, self.tally, self.visitor = app, tally, visitor

    def run(self, until: float) -> None:
        for round_ in itertools.count():
            if time.monotonic() >= until:
                return
            try:
                if asyncio.run(self.round(round_)):
                    self.tally.loops["mcp agent"] += 1
            except Exception as e:  # the session itself failed (connect, protocol)
                self.tally.unexpected("mcp session", e)
            time.sleep(AGENT_PAUSE)

    async def round(self, round_: int) -> bool:
        """One session, its calls one after the other; False once one fails (counted by `tool`)."""
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        headers = {"X-Bees-Ants-Key": self.visitor.key}  # the visitor's key now (it changes with churn)
        async with httpx.AsyncClient(headers=headers, timeout=120) as http:
            async with streamable_http_client(self.app.url + "gradio_api/mcp/", http_client=http) as (read, write, _):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    listed = await self.tool(session, "list_models", {})
                    if listed is None:
                        return False
                    models = json.loads(listed)["models"]
                    own = [m["model"] for m in models if m["yours"]]
                    model = own[0] if own else (models[0]["model"] if models else "")
                    seed = 1_000_000 + 1000 * self.visitor.number + round_
                    image = "data:image/png;base64," + base64.b64encode(picture(COLOURS["ants"], seed)).decode()
                    if await self.tool(session, "classify", {"image": image, "model": model}, refusal="no model named",
                                       check=lambda answer: json.loads(answer)["predictions"]) is None:
                        return False
                    return await self.tool(session, "training_status", {}, check=lambda a: json.loads(a)["status"]) \
                        is not None

    async def tool(self, session, name: str, arguments: dict, refusal: str | None = None, check=bool) -> str | None:
        """The tool's answer, or None when it failed (an error) or gave advice containing `refusal`
        (a model deleted between list and classify: a race any agent meets). Errors are recorded
        here, not raised: raised inside the MCP client's task group they would come out wrapped."""
        endpoint = f"mcp {name}"
        start = time.perf_counter()
        try:
            result = await session.call_tool(name, arguments)
        except Exception as e:
            self.tally.answered(endpoint, None)
            self.tally.error(endpoint, f"{type(e).__name__}: {e}")
            return None
        self.tally.answered(endpoint, time.perf_counter() - start)
        text = result.content[0].text if result.content else ""
        if result.isError and refusal and refusal in text:
            self.tally.refused(endpoint, text)
            return None
        try:
            if not result.isError and check(text):
                return text
        except (ValueError, KeyError, TypeError):  # not the JSON it promises
            pass
        self.tally.error(endpoint, text)
        return None


class Flood:
    """One client calling /train every FLOOD_EVERY seconds on the shared dataset, whatever the
    answer: one run at a time is accepted (and left to stream on), the rest refused."""

    def __init__(self, app: App, tally: Tally, dataset: Path, scratch: Path):
        self.tally, self.dataset = tally, str(dataset)
        self.client = local_client(app.url, headers={"X-Bees-Ants-Key": new_key()},
                                   download_files=str(scratch / "flood"))

    def run(self, until: float) -> None:
        args = dict(dataset=self.dataset, arch=ARCH, mode="fixed", backbone="none", epochs=1, lr=0.01, momentum=0.9,
                    batch_size=8, step_size=7, gamma=0.1, frozen_epochs=1)
        notice_at = output_ids(self.client, "train").index("notice")
        while time.monotonic() < until:
            try:
                with self.tally.call("train (flood)"):
                    job = self.client.submit(**args, api_name="/train")
                    first = next(iter(job))  # the first answer: refused, or started (the rest streams on)
                notice = value(first[notice_at]) or ""
                if notice.startswith(ADVICE):
                    self.tally.refused("train (flood)", notice)
                self.tally.loops["flood call"] += 1
            except Failed:
                pass
            time.sleep(FLOOD_EVERY)


# -- the run --------------------------------------------------------------------------------------

def soak(root: Path, visitors: int, agents: int, seconds: float, signed_in: bool = True, flood: bool = True,
         exports: bool = True, sample_every: float = SAMPLE_EVERY, env: dict[str, str] | None = None,
         log=print) -> dict:
    """Run the app on `root` with these clients for `seconds`; the report (see `main`). Without
    `exports`, the visitors' loops leave out the ONNX export (tens of seconds on a small CPU)."""
    shared = shared_dataset(root)
    app = App(root, {"BEES_ANTS_DATASETS": str(shared), **(env or {})}, "soak-signed-in" if signed_in else None)
    tally, samples = Tally(), []
    try:
        log("training the shared model while the app starts…")
        train_shared_model(shared, app.folders["weights"])
        app.wait_until_up()
        started = time.monotonic()
        log(f"app up at {app.url} (pid {app.process.pid}); clients for {seconds:.0f} s")
        scratch = root / "clients"
        people = [ApiVisitor(app, tally, i, scratch, exports) for i in range(visitors)]
        if signed_in:
            people.append(SignedInVisitor(app, tally, visitors, scratch, exports))
        actors = people + [Agent(app, tally, people[i % len(people)]) for i in range(agents)]
        if flood:
            actors.append(Flood(app, tally, shared, scratch))
        until = time.monotonic() + seconds
        threads = [threading.Thread(target=a.run, args=(until,), daemon=True) for a in actors]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            point = sample(app, tally, started)
            samples.append(point)
            log(f"{point['t_s']:7.0f} s  loops {dict(tally.loops)}  RSS {point['rss_mb']} MB  fds {point['fds']}  "
                f"threads {point['threads']}  disk MB " + " ".join(f"{n} {point[n + ' MB']}" for n in app.folders))
            next_sample = time.monotonic() + sample_every
            for t in threads:
                t.join(timeout=max(0.0, next_sample - time.monotonic()))
        samples.append(sample(app, tally, started))
        budgets = what_is_kept(app)
    finally:
        app.close()
    return {"visitors": visitors, "agents": agents, "signed_in": signed_in, "flood": flood, "exports": exports,
            "seconds": seconds,
            "settings": {**SHORT_BUDGETS, **(env or {})}, "loops": dict(tally.loops),
            "errors": sum(len(e) for e in tally.errors.values()),
            "refusals": sum(sum(c.values()) for c in tally.refusals.values()),
            "endpoints": tally.table(), "kept": budgets, "samples": samples}


def sample(app: App, tally: Tally, started: float) -> dict:
    """The app process now, with the time and the visitors' whole loops done so far."""
    loops = tally.loops[ApiVisitor.kind] + tally.loops[SignedInVisitor.kind]
    return {"t_s": round(time.monotonic() - started, 1), **app.sample(), "loops": loops}


def what_is_kept(app: App) -> dict:
    """The most any one visitor has of each thing at the end, against the budgets."""
    data, weights = app.folders["data root"] / "visitors", app.folders["weights"] / "visitors"
    downloads = app.folders["gradio cache"] / "bees_ants-downloads"
    most = lambda counts: max(counts, default=0)  # noqa: E731
    return {"visitors with folders": len({p.name for root in (data, weights) if root.is_dir() for p in root.iterdir()}),
            "datasets": most(sum((d / "train").is_dir() for d in v.iterdir()) for v in listing(data)),
            "models": most(len(list(v.glob("*.pt"))) for v in listing(weights)),
            "downloads": most(len(list(v.iterdir())) for v in listing(downloads)),
            "signed-in visitors": sum(p.read_text() == "signed-in"
                                      for p in (app.folders["weights"] / ".visits").glob("*"))}


def listing(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if folder.is_dir() else []


# -- the report -----------------------------------------------------------------------------------

def thinned(samples: list[dict], most: int = MAX_POINTS) -> list[dict]:
    if len(samples) <= most:
        return samples
    step = (len(samples) - 1) / (most - 1)
    return [samples[round(i * step)] for i in range(most)]


RESOURCES = ("rss_mb", "fds", "threads", "data root MB", "weights MB", "gradio cache MB", "temp MB",
             "gradio cache files")


def markdown(report: dict) -> str:
    """The report as tables: per endpoint; the app process at start, middle and end; and the
    largest value of each quarter of the run, which stays level when nothing grows with the loops."""
    lines = ["| endpoint | calls | errors | refusals | p50 s | p95 s |", "|---|---|---|---|---|---|"]
    for name, row in report["endpoints"].items():
        lines.append(f"| {name} | {row['calls']} | {row['errors']} | {row['refusals']} | {row['p50_s']} "
                     f"| {row['p95_s']} |")
    samples = report["samples"]
    header = ["", "| | t s | loops | " + " | ".join(RESOURCES) + " |", "|---" * (len(RESOURCES) + 3) + "|"]
    lines += header
    for label, s in (("start", samples[0]), ("middle", samples[len(samples) // 2]), ("end", samples[-1])):
        lines.append(f"| {label} | {s['t_s']:.0f} | {s['loops']} | " + " | ".join(str(s[r]) for r in RESOURCES) + " |")
    lines += header
    n = len(samples)
    for q in range(4):
        part = samples[q * n // 4:(q + 1) * n // 4] or samples[-1:]
        lines.append(f"| max, quarter {q + 1} | ≤{part[-1]['t_s']:.0f} | {part[-1]['loops']} | "
                     + " | ".join(str(max(s[r] for s in part)) for r in RESOURCES) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--visitors", type=int, default=4, help="API visitors (each with a key of its own)")
    ap.add_argument("--agents", type=int, default=2, help="MCP agents (each with the key of one API visitor)")
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--no-signed-in", action="store_true", help="leave out the signed-in stand-in")
    ap.add_argument("--no-flood", action="store_true")
    ap.add_argument("--root", type=Path, help="scratch folder (default: a new temp folder, removed after)")
    ap.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    ap.add_argument("--table", action="store_true", help="only print the tables of the report in --out")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown(json.loads(args.out.read_text())))
        return 0
    root = args.root or Path(tempfile.mkdtemp(prefix="bees_ants-soak-"))
    try:
        report = soak(root, args.visitors, args.agents, args.minutes * 60, signed_in=not args.no_signed_in,
                      flood=not args.no_flood, log=lambda s: print(s, flush=True))
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    report["samples"] = thinned(report["samples"])
    report["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\nloops {report['loops']}, errors {report['errors']}, refusals {report['refusals']}; kept at the end "
          f"(most per visitor): {report['kept']}\n")
    print(markdown(report))
    for name, row in report["endpoints"].items():
        for e in row["first_errors"]:
            print(f"error in {name}: {e}")
    print(f"\nwritten: {args.out}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
