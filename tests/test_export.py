"""Exported programs run without this project's code and predict exactly what the predictor does."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bees_ants.cli import main
from bees_ants.export import export_program
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
    assert "to 256 (bilinear)" in result["info"]["input"]  # resnet18's weights entry says bilinear
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
