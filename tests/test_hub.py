"""Push to and load from the Hugging Face Hub, against a local fake of its HTTP API (never the network)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("safetensors")

from bees_ants.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from bees_ants.hub import HubError, hub_id, load_from_hub, push_to_hub  # noqa: E402
from bees_ants.predict import Predictor  # noqa: E402
from conftest import COLOURS, write_image  # noqa: E402
from fake_hub import serve_fake_hub  # noqa: E402

TOKEN = "hf_test_write_token"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub():
    with serve_fake_hub(TOKEN) as (endpoint, fake):
        yield endpoint, fake


def images(folder: Path, n: int = 4) -> list[Path]:
    return [write_image(folder / f"{i}.png", COLOURS["ants" if i % 2 else "bees"], seed=300 + i) for i in range(n)]


def test_push_then_load_by_id_predicts_the_same(trained_checkpoint, hub, tmp_path):
    endpoint, fake = hub
    local = Predictor(trained_checkpoint)
    evaluation = local.evaluate(local.checkpoint.meta["dataset"]["root"], "val")
    url = push_to_hub(trained_checkpoint, "alice/ants-bees", TOKEN, evaluation, endpoint=endpoint)
    assert url.endswith("/alice/ants-bees")

    files = fake.repos["alice/ants-bees"]
    assert set(files) == {"model.safetensors", "config.json", "README.md", "curves.png", "confusion.png"}
    assert all(files[name].startswith(b"\x89PNG") for name in ("curves.png", "confusion.png"))
    card = files["README.md"].decode()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: bees_ants" in front and "image-classification" in front and "accuracy" in front
    assert f"{local.checkpoint.meta['best']['val_acc']:.4f}" in body  # the metrics table
    assert "![confusion matrix](confusion.png)" in body and "(curves.png)" in body
    config = json.loads(files["config.json"])
    assert config["class_names"] == ["ants", "bees"] and config["arch"] == "resnet18"
    assert str(trained_checkpoint.parent.parent) not in files["config.json"].decode()  # no server paths

    remote = Predictor(load_from_hub("hf://alice/ants-bees", endpoint=endpoint, cache_dir=tmp_path / "cache"))
    pictures = images(tmp_path / "imgs")
    for a, b in zip(local.predict(pictures), remote.predict(pictures)):
        assert a.label == b.label and a.probabilities == pytest.approx(b.probabilities, abs=1e-6)


def test_push_refuses_a_bad_token_and_a_bad_id(trained_checkpoint, hub):
    endpoint, fake = hub
    with pytest.raises(HubError, match="token is missing or invalid"):
        push_to_hub(trained_checkpoint, "alice/m", "hf_wrong", endpoint=endpoint)
    with pytest.raises(HubError, match="write token"):
        push_to_hub(trained_checkpoint, "alice/m", "", endpoint=endpoint)
    with pytest.raises(HubError, match="repo id"):
        push_to_hub(trained_checkpoint, "no namespace", TOKEN, endpoint=endpoint)
    assert fake.repos == {}


def put_repo(fake, repo: str, files: dict[str, bytes]) -> None:
    fake.repos[repo] = files
    fake.commits[repo] = "a" * 40


def hostile_repos(trained_checkpoint, fake) -> None:
    import safetensors.torch
    good = json.loads(json.dumps({
        "arch": "resnet18", "class_names": ["ants", "bees"], "mode": "fixed",
        "preprocessing": load_checkpoint(trained_checkpoint).meta["preprocessing"]}))
    weights = safetensors.torch.save({k: v.contiguous() for k, v in load_checkpoint(trained_checkpoint).state_dict.items()})
    put_repo(fake, "eve/code", {"config.json": json.dumps({**good, "arch": "os.system"}).encode(), "model.safetensors": weights})
    put_repo(fake, "eve/names", {"config.json": json.dumps({**good, "class_names": "ants"}).encode(), "model.safetensors": weights})
    put_repo(fake, "eve/huge", {"config.json": json.dumps({**good, "preprocessing": {
        **good["preprocessing"], "resize_size": 10**9}}).encode(), "model.safetensors": weights})
    put_repo(fake, "eve/notjson", {"config.json": b"\xff\xfe not json", "model.safetensors": weights})
    put_repo(fake, "eve/pickle", {"config.json": json.dumps(good).encode(),
                                  "model.safetensors": b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR."})
    put_repo(fake, "eve/noweights", {"config.json": json.dumps(good).encode()})
    put_repo(fake, "eve/mismatch", {"config.json": json.dumps({**good, "class_names": ["a", "b", "c"]}).encode(),
                                    "model.safetensors": weights})


@pytest.mark.parametrize("repo, message", [
    ("eve/code", "'arch' must be one of"), ("eve/names", "'class_names' must be a list"),
    ("eve/huge", "resize_size >= crop_size"), ("eve/notjson", "not valid JSON"),
    ("eve/pickle", "not a readable safetensors file"), ("eve/noweights", "has no model.safetensors"),
    ("eve/missing", "no such model"),
])
def test_hostile_hub_repos_are_refused_with_a_reason(trained_checkpoint, hub, tmp_path, repo, message):
    endpoint, fake = hub
    hostile_repos(trained_checkpoint, fake)
    with pytest.raises(HubError, match=message):
        load_from_hub(repo, endpoint=endpoint, cache_dir=tmp_path / "cache")


def test_weights_that_do_not_fit_the_config_are_refused(trained_checkpoint, hub, tmp_path):
    endpoint, fake = hub
    hostile_repos(trained_checkpoint, fake)
    with pytest.raises(CheckpointError, match="does not match its architecture"):
        Predictor(load_from_hub("eve/mismatch", endpoint=endpoint, cache_dir=tmp_path / "cache"))


def test_hub_ids_and_local_paths_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub_id("alice/model") == "alice/model"
    assert hub_id("hf://alice/model") == "alice/model"
    assert hub_id("weights/model.pt") is None  # a mistyped checkpoint path stays a path
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "model").write_bytes(b"")
    assert hub_id("alice/model") is None  # an existing local file wins
    assert hub_id("/abs/path") is None


def test_cli_push_then_predict_by_hub_id(trained_checkpoint, hub, tmp_path):
    endpoint, fake = hub
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(ROOT)}
    pictures = images(tmp_path / "imgs", 2)
    push = subprocess.run([sys.executable, "-m", "bees_ants", "push", str(trained_checkpoint), "bob/tiny"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert push.returncode == 0, push.stderr
    assert "pushed to" in push.stdout and "confusion.png" in fake.repos["bob/tiny"]
    predict = subprocess.run([sys.executable, "-m", "bees_ants", "predict", "bob/tiny", *map(str, pictures)],
                             cwd=tmp_path, env={**env, "HF_TOKEN": ""}, capture_output=True, text=True)
    assert predict.returncode == 0, predict.stderr
    local = Predictor(trained_checkpoint).predict(pictures)
    lines = [line.split("\t") for line in predict.stdout.strip().splitlines()]
    assert [row[1] for row in lines] == [p.label for p in local]
    assert [float(row[2]) for row in lines] == pytest.approx([p.confidence for p in local], abs=1e-3)
    missing = subprocess.run([sys.executable, "-m", "bees_ants", "predict", "bob/nothing", str(pictures[0])],
                             cwd=tmp_path, env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "no such model" in missing.stderr
