"""Exported programs run without this project's code and predict what the predictor does: the .pt2
with torch alone (exactly), the .onnx with onnxruntime alone (within 1e-4)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dataclasses import asdict

from bees_ants.checkpoint import Checkpoint
from bees_ants.cli import main
from bees_ants.config import ARCHS
from bees_ants.errors import MissingExtra
from bees_ants.export import export_onnx, export_program
from bees_ants.models import build_model, preprocessing_for
from bees_ants.predict import Predictor
from conftest import COLOURS, write_image


def test_export_runs_without_the_project_and_agrees(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.pt2"
    assert main(["export", str(trained_checkpoint), "--output", str(out)]) == 0
    predictor = Predictor(trained_checkpoint)
    files = [write_image(tmp_path / f"{i}.png", COLOURS["ants" if i % 2 else "bees"], seed=200 + i) for i in range(3)]
    crops = []
    for f in files:  # the recipe the file documents: shorter side -> resize, center crop
        img, crop, _ = predictor.prepare(f)
        crops.append(crop)
    batch = torch.stack(crops)
    torch.save(batch, tmp_path / "batch.pt")
    script = f"""
import json, sys, torch
extra = {{"bees_ants.json": ""}}
program = torch.export.load({str(out)!r}, extra_files=extra)
probs = program.module()(torch.load({str(tmp_path / 'batch.pt')!r}))
print(json.dumps({{"info": json.loads(extra["bees_ants.json"]), "probs": probs.tolist(),
                  "imported_project": any(m.startswith("bees_ants") for m in sys.modules)}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["imported_project"] is False
    assert result["info"]["class_names"] == ["ants", "bees"]
    assert "to 73 (bilinear)" in result["info"]["input"]  # 64 px in 256:224; resnet18's entry says bilinear
    expected = predictor.probabilities(batch)
    assert torch.allclose(torch.tensor(result["probs"]), expected, atol=1e-5)
    assert [max(range(2), key=p.__getitem__) for p in result["probs"]] == expected.argmax(1).tolist()


def test_failed_save_leaves_no_temporary_file(trained_checkpoint, tmp_path, monkeypatch):
    def full_disk(program, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch.export, "save", full_disk)
    with pytest.raises(OSError, match="disk full"):
        export_program(trained_checkpoint, tmp_path / "model.pt2")
    assert list(tmp_path.iterdir()) == []


ONNX_SCRIPT = """
import json, sys
sys.modules["torch"] = None  # onnxruntime alone: any torch import would fail here
import numpy as np, onnxruntime as ort
from PIL import Image
model, files = sys.argv[1], sys.argv[2:]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
info = json.loads(session.get_modelmeta().custom_metadata_map["bees_ants.json"])
prep = info["preprocessing"]
crops = []
for f in files:  # the recipe the file documents: shorter side -> resize_size, center crop
    img = Image.open(f).convert("RGB")
    scale = prep["resize_size"] / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling[prep["interpolation"].upper()])
    c = prep["crop_size"]
    left, top = int(round((img.width - c) / 2)), int(round((img.height - c) / 2))
    crops.append(np.asarray(img.crop((left, top, left + c, top + c)), dtype=np.uint8).transpose(2, 0, 1))
probs = session.run(None, {session.get_inputs()[0].name: np.stack(crops)})[0]
print(json.dumps({"classes": info["class_names"], "probs": probs.tolist(),
                  "torch_or_project": [m for m in sys.modules if m.startswith(("torch", "bees_ants")) and sys.modules[m]]}))
"""


def test_onnx_runs_with_onnxruntime_alone_and_agrees(trained_checkpoint, tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", str(trained_checkpoint), "--format", "onnx", "--output", str(out)]) == 0
    files = [write_image(tmp_path / f"{i}.png", COLOURS["ants" if i % 2 else "bees"], size=(80 + 9 * i, 60), seed=400 + i)
             for i in range(5)]
    clean_env = {"PATH": "/usr/bin:/bin"}  # no PYTHONPATH: nothing of this project can be imported
    proc = subprocess.run([sys.executable, "-I", "-c", ONNX_SCRIPT, str(out), *map(str, files)], cwd=tmp_path,
                          env=clean_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["torch_or_project"] == []
    assert result["classes"] == ["ants", "bees"]
    expected = Predictor(trained_checkpoint).predict(files)
    got = torch.tensor(result["probs"])
    assert [result["classes"][k] for k in got.argmax(1).tolist()] == [p.label for p in expected]
    assert torch.allclose(got, torch.tensor([[p.probabilities[c] for c in ("ants", "bees")] for p in expected]),
                          atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_exports_to_onnx(arch, tmp_path):
    """Random weights, one crop: the ONNX model computes what the torch model does, at any batch size."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    prep = preprocessing_for(arch)
    ckpt = Checkpoint(build_model(arch, 3).state_dict(), {"arch": arch, "class_names": ["a", "b", "c"],
                                                          "mode": "fixed", "preprocessing": asdict(prep)},
                      str(tmp_path / f"{arch}.pt"))
    path = export_onnx(ckpt)
    assert path == tmp_path / f"{arch}.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    crops = torch.randint(0, 256, (3, 3, prep.crop_size, prep.crop_size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = Predictor(ckpt, device="cpu").probabilities(crops)
    for batch in (crops[:1], crops):
        got = torch.from_numpy(session.run(None, {"crops": batch.numpy()})[0])
        assert torch.allclose(got, expected[:len(batch)], atol=1e-4)


def test_onnx_export_without_its_extra_says_what_to_install(trained_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(MissingExtra, match="pip install -r requirements-extras.txt"):
        export_onnx(trained_checkpoint, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_model_trains_while_another_is_exported_as_the_app_exports(trained_checkpoint, tmp_path):
    # torch.export marks the whole process as exporting, and every @torch._disable_dynamo function
    # (torch.manual_seed, the optimizer's steps) then edits trace metadata shared by all threads: in
    # the app a run failed with "KeyError: 'custom'" while a visitor exported a model (bench.soak),
    # and so does this run with export_onnx in this process. The app exports in a process of its own.
    import threading

    onnx = pytest.importorskip("onnx")
    from bees_ants.export import META_FILE, export_apart
    from bees_ants.train import TrainingRun
    from conftest import make_dataset, small_config

    # The fixed extractor on cached features: thousands of tiny optimizer steps while the export runs.
    run = TrainingRun(small_config(make_dataset(tmp_path / "data", n_train=16), tmp_path, arch="mobilenet_v2",
                                   epochs=60, batch_size=1))
    failure = []

    def train():
        try:
            list(run)
        except Exception as e:
            failure.append(e)

    trainer = threading.Thread(target=train)
    trainer.start()
    exported = export_apart("onnx", trained_checkpoint, tmp_path / "m.onnx")
    trainer.join()
    assert failure == [] and run.status == "completed", failure
    meta = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert json.loads(meta[META_FILE])["class_names"] == ["ants", "bees"]


def test_an_export_apart_gives_the_command_lines_advice(tmp_path):
    from bees_ants.errors import UserError
    from bees_ants.export import export_apart

    with pytest.raises(UserError, match="^checkpoint '.*missing.pt' does not exist$"):
        export_apart("onnx", tmp_path / "missing.pt", tmp_path / "m.onnx")
