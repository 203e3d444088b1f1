"""Prediction (per-file results, grids), evaluation and the command line end to end."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bees_ants.checkpoint import load_checkpoint
from bees_ants.cli import main
from bees_ants.predict import Predictor, predictions_figure, val_sample_figure
from conftest import COLOURS, SHARED, make_dataset, write_image

ROOT = Path(__file__).resolve().parents[1]


def test_predictions_for_good_and_broken_files(trained_checkpoint, tmp_path):
    good = [write_image(tmp_path / "red.jpg", COLOURS["ants"], seed=101),
            write_image(tmp_path / "blue.png", COLOURS["bees"], seed=102),
            write_image(tmp_path / "grey_blue.png", COLOURS["bees"], seed=103, mode="L")]
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good[1].read_bytes()[:200])
    files = [good[0], text, good[1], tmp_path / "missing.png", truncated, good[2]]
    results = Predictor(trained_checkpoint).predict(files)
    assert [r.name for r in results] == [f.name for f in files]
    assert [r.error is None for r in results] == [True, False, True, False, False, True]
    assert "not an image" in results[1].error
    # A vanished file (an upload removed while its request waited) is reported, not raised, and
    # its reason names no path on the server.
    assert results[3].error == "cannot read file: No such file or directory"
    assert (results[0].label, results[2].label) == ("ants", "bees")
    for r in (results[0], results[2], results[5]):
        assert set(r.probabilities) == {"ants", "bees"}
        assert abs(sum(r.probabilities.values()) - 1) < 1e-5 and r.confidence == max(r.probabilities.values())


def test_evaluate_agrees_with_recorded_val_accuracy(trained_checkpoint):
    predictor = Predictor(trained_checkpoint)
    meta = predictor.checkpoint.meta
    ev = predictor.evaluate(meta["dataset"]["root"], "val")
    assert ev.accuracy == pytest.approx(meta["best"]["val_acc"])
    assert sum(map(sum, ev.confusion)) == 8
    assert set(ev.per_class()) == {"ants", "bees"}
    wrong = ev.mistakes()
    assert len(wrong) == sum(t != p for t, p in zip(ev.true, ev.predicted))
    assert [ev.losses[i] for i in wrong] == sorted((ev.losses[i] for i in wrong), reverse=True)


def test_grids_have_a_labelled_panel_per_image(trained_checkpoint, tmp_path):
    predictor = Predictor(trained_checkpoint)
    files = [write_image(tmp_path / f"{i}.png", COLOURS["ants"], seed=i) for i in range(3)]
    fig = predictions_figure(predictor.predict(files))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 3 and all(" · " in t and t.endswith("%") for t in titles)
    assert [t.split("\n")[0] for t in titles] == ["0.png", "1.png", "2.png"]  # which file each tile is
    long = write_image(tmp_path / ("a_very_long_file_name_from_a_camera_" * 2 + ".png"), COLOURS["ants"])
    [title] = [ax.get_title() for ax in predictions_figure(predictor.predict([long])).axes if ax.get_title()]
    name = title.split("\n")[0]
    assert name.startswith("a_very_long") and "…" in name and name.endswith(".png") and len(name) <= 28
    fig = val_sample_figure(predictor, predictor.checkpoint.meta["dataset"]["root"], count=4, seed=0)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4 and all(t.startswith("predicted: ") and "\ntrue: " in t for t in titles)


def test_cli_train_predict_evaluate(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", classes=("ants", "bees", "wasps"), n_train=6, n_val=3)
    out = tmp_path / "model.pt"
    code = main(["train", "--data-dir", str(data), "--backbone-weights", "none", "--mode", "fixed",
                 "--epochs", "6", "--lr", "0.02", "--batch-size", "4", "--image-size", "64", "--output", str(out),
                 "--json"])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert sum(line.startswith("epoch ") for line in printed.splitlines()) == 6
    assert "done: best val acc" in printed
    summary = json.loads(printed.strip().splitlines()[-1])
    assert summary["checkpoint"] == str(out) and len(summary["history"]) == 6
    assert load_checkpoint(out).meta["class_names"] == ["ants", "bees", "wasps"]

    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    code = main(["predict", str(out), str(data / "val" / "wasps"), str(tmp_path / "broken.jpg"),
                 "--grid", str(tmp_path / "grid.png")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1  # one file failed; the others still got their line
    assert len(lines) == 4 and sum("\tERROR\t" in line for line in lines) == 1
    assert (tmp_path / "grid.png").stat().st_size > 1000
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(out), str(tmp_path / "empty")]) == 2  # no image at all: one line
    assert capsys.readouterr().err.strip() == "error: no image files found in the given paths"

    assert main(["evaluate", str(out), "--data-dir", str(data)]) == 0
    report = capsys.readouterr().out
    assert "val accuracy" in report and "confusion" in report and "wasps" in report


def test_predict_on_a_folder_gives_every_file_a_line(trained_checkpoint, tmp_path, capsys):
    folder = tmp_path / "photos"
    write_image(folder / "a.png", COLOURS["ants"], seed=1)
    write_image(folder / "nested" / "b.jpg", COLOURS["bees"], seed=2)
    Image.new("RGB", (40, 30), COLOURS["bees"]).convert("P").save(folder / "c.gif")
    (folder / "notes.txt").write_text("not an image")
    (folder / "raw.xyz").write_bytes(b"\x00\x01")
    code = main(["predict", str(trained_checkpoint), str(folder)])
    lines = dict(line.split("\t", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert sorted(Path(name).name for name in lines) == ["a.png", "b.jpg", "c.gif", "notes.txt", "raw.xyz"]
    errors = {Path(name).name: rest for name, rest in lines.items() if rest.startswith("ERROR\t")}
    assert sorted(errors) == ["notes.txt", "raw.xyz"] and all("not an image" in e for e in errors.values())
    assert lines[str(folder / "c.gif")].split("\t")[0] in ("ants", "bees")  # a GIF is classified
    assert code == 1  # two files could not be classified


@pytest.mark.parametrize("argv, message", [
    (["train", "--data-dir", "/nonexistent/x", "--backbone-weights", "none"], "does not exist"),
    (["train", "--data-dir", "{data}", "--backbone-weights", "/nonexistent.pth"], "does not exist"),
    (["train", "--data-dir", "{data}", "--backbone-weights", "none", "--epochs", "0"], "epochs must be"),
    (["predict", "/nonexistent.pt", "x.png"], "does not exist"),
])
def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path, capsys, argv, message):
    data = make_dataset(tmp_path / "d", n_train=2, n_val=2)
    code = main([a.replace("{data}", str(data)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "bees_ants", "train", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "--backbone-weights" in out and "--preset" in out


@pytest.mark.skipif(not (SHARED / "data" / "hymenoptera_data").is_dir(), reason="../shared data absent")
def test_predict_on_real_val_images_with_a_tiny_model(trained_checkpoint):
    """Real photos of all sizes decode and get a label (the model itself is a colour toy)."""
    files = sorted((SHARED / "data" / "hymenoptera_data" / "val" / "bees").iterdir())[:10]
    results = Predictor(trained_checkpoint).predict(files)
    assert all(r.error is None and r.label in ("ants", "bees") for r in results)
