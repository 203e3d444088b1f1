"""The command line's own behaviour: a torch-free --help with defaults, locations from the same
environment variables as the app, the CPU default mode, evaluate's dataset choice, progress lines."""
import io
import subprocess
import sys
from pathlib import Path

import pytest

from bees_ants.checkpoint import load_checkpoint
from bees_ants.cli import ProgressLine, build_parser, main, train_config
from bees_ants.config import TrainConfig
from bees_ants.settings import Settings
from conftest import COLOURS, make_dataset, write_image, write_zip

ROOT = Path(__file__).resolve().parents[1]
LOCATIONS = ("BEES_ANTS_DATA_ROOT", "BEES_ANTS_DATASETS", "BEES_ANTS_BACKBONE_WEIGHTS", "BEES_ANTS_WEIGHTS_DIR",
             "BEES_ANTS_IMAGE_SIZE")


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean set of location variables, and a working directory nothing else writes to."""
    for name in LOCATIONS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"]])
def test_help_does_not_import_torch(argv):
    code = ("import runpy, sys\n"
            f"sys.argv = ['bees_ants', *{argv!r}]\n"
            "try:\n    runpy.run_module('bees_ants', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = sorted(m for m in ('torch', 'torchvision', 'PIL', 'numpy', 'matplotlib') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m bees_ants" in out.stdout


def test_train_help_shows_every_hyperparameter_default(env, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    d = TrainConfig(data_dir="")
    for option, value in [("epochs", d.epochs), ("lr", d.lr), ("momentum", d.momentum),
                          ("batch-size", d.batch_size), ("step-size", d.step_size), ("gamma", d.gamma),
                          ("feature-views", d.feature_views), ("frozen-epochs", d.frozen_epochs),
                          ("seed", d.seed), ("arch", d.arch), ("optimizer", d.optimizer),
                          ("backbone-lr-scale", d.backbone_lr_scale), ("label-smoothing", d.label_smoothing),
                          ("lr-schedule", d.lr_schedule), ("train-blocks", d.train_blocks), ("patience", d.patience),
                          ("stop-metric", d.stop_metric)]:
        assert f"(default {value}" in text.split(f"--{option} ")[-1].split(" --")[0], option
    assert "default: fixed on a CPU" in text and "default weights/" in text and "downloaded to data/" in text


def test_help_names_the_locations_from_the_environment(env):
    env.setenv("BEES_ANTS_WEIGHTS_DIR", "models")
    env.setenv("BEES_ANTS_DATA_ROOT", "images")
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    text = " ".join(train.format_help().split())
    assert "default models/" in text and "downloaded to images/" in text


def test_the_image_size_setting_is_checked_at_start_and_an_option_wins_over_it():
    assert Settings.from_env({}).image_size is None and Settings.from_env({"BEES_ANTS_IMAGE_SIZE": "0"}).image_size is None
    settings = Settings.from_env({"BEES_ANTS_IMAGE_SIZE": "160"})
    assert train_config(parse_train(), settings)[0].image_size == 160
    assert train_config(parse_train("--image-size", "96"), settings)[0].image_size == 96
    for bad in ("16", "4096"):
        with pytest.raises(ValueError, match=f"BEES_ANTS_IMAGE_SIZE={bad} is not between 32 and 1024 pixels"):
            Settings.from_env({"BEES_ANTS_IMAGE_SIZE": bad})


def parse_train(*argv):
    return build_parser().parse_args(["train", *argv])


def test_backbone_weights_default_follows_the_environment(env, tmp_path):
    weights = tmp_path / "mobilenet_v2-b0353104.pth"
    weights.write_bytes(b"")
    assert train_config(parse_train(), Settings())[0].backbone_weights == "imagenet"
    settings = Settings(backbone_weights=weights)
    config, note = train_config(parse_train(), settings)
    assert (config.backbone_weights, config.arch) == (str(weights), "mobilenet_v2")  # the file names its arch
    assert "BEES_ANTS_BACKBONE_WEIGHTS" in note
    assert train_config(parse_train("--arch", "resnet50"), settings)[0].arch == "resnet50"
    assert train_config(parse_train("--backbone-weights", "none"), settings)[0].backbone_weights is None
    # a folder of files is for the app's picker; the CLI then starts from ImageNet
    assert train_config(parse_train(), Settings(backbone_weights=tmp_path))[0].backbone_weights == "imagenet"


def test_options_win_over_the_preset_which_wins_over_defaults(env):
    config, _ = train_config(parse_train("--preset", "tutorial", "--epochs", "3"), Settings(weights_dir=Path("w")))
    assert (config.batch_size, config.feature_views, config.epochs, config.out_dir) == (4, 25, 3, "w")
    assert train_config(parse_train("--out-dir", "x"), Settings(weights_dir=Path("w")))[0].out_dir == "x"


def test_progress_on_a_log_writes_a_line_per_tenth_at_most():
    out = io.StringIO()
    progress = ProgressLine(out, tty=False)
    for done in range(0, 246):
        progress("decoding train", done, 245)
    for done in range(1, 4):
        progress("decoding val", done, 3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "decoding train: 25/245 (10%)" and lines[9] == "decoding train: 245/245 (100%)"
    assert len(lines) == 13 and lines[10:] == ["decoding val: 1/3 (33%)", "decoding val: 2/3 (66%)",
                                               "decoding val: 3/3 (100%)"]
    progress.end()  # nothing open on a log
    assert len(out.getvalue().splitlines()) == 13


def test_progress_on_a_terminal_rewrites_one_line():
    out = io.StringIO()
    progress = ProgressLine(out, tty=True)
    for done in range(0, 1001):
        progress("features", done, 1000)
    text = out.getvalue()
    assert text.count("\r") == 101 and text.count("\n") == 1 and text.endswith("features: 1000/1000 (100%)\x1b[K\n")
    progress("features", 5, 10)  # the same stage again (say, the next feature pass): shown again
    assert not out.getvalue().endswith("\n")
    progress.end()  # an interrupted stage: its line is ended before other output
    assert out.getvalue().endswith("(50%)\x1b[K\n")


def test_train_uses_the_locations_and_defaults_to_fixed_on_a_cpu(env, tmp_path, capsys):
    env.setenv("BEES_ANTS_DATA_ROOT", str(tmp_path / "root"))
    env.setenv("BEES_ANTS_WEIGHTS_DIR", str(tmp_path / "models"))
    env.setenv("BEES_ANTS_IMAGE_SIZE", "64")
    members = {}
    for cls in ("ants", "bees"):
        for i in range(5):
            members[f"{cls}/{i}.png"] = write_image(tmp_path / "src" / cls / f"{i}.png", COLOURS[cls], seed=i).read_bytes()
    archive = write_zip(tmp_path / "bugs.zip", members)
    assert main(["train", "--data-dir", str(archive), "--backbone-weights", "none", "--epochs", "2",
                 "--batch-size", "4", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert (tmp_path / "root" / "bugs" / "train").is_dir()  # the zip went into BEES_ANTS_DATA_ROOT
    [checkpoint] = (tmp_path / "models").glob("*.pt")  # and the model into BEES_ANTS_WEIGHTS_DIR
    assert checkpoint.name.startswith("resnet18-fixed-") and not Path("weights").exists()
    assert load_checkpoint(checkpoint).meta["preprocessing"]["crop_size"] == 64  # BEES_ANTS_IMAGE_SIZE's
    assert any(line.startswith("mode fixed: no --mode given and this is a CPU") for line in lines)
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch "))
    before = "\n".join(lines[:first_epoch])
    assert "device CPU" in before and "train: 8 images" in before  # the summary comes first
    assert f"checkpoint {checkpoint}" in printed


def test_evaluate_defaults_to_the_models_own_dataset(env, tmp_path, capsys):
    env.setenv("BEES_ANTS_DATA_ROOT", str(tmp_path / "root"))
    data = make_dataset(tmp_path / "mine", n_train=4, n_val=2)
    model = tmp_path / "m.pt"
    assert main(["train", "--data-dir", str(data), "--backbone-weights", "none", "--mode", "fixed",
                 "--epochs", "1", "--batch-size", "4", "--image-size", "64", "--output", str(model)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(model)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"dataset {data} (the dataset this model was trained on)") and "val accuracy" in out
    # its folder gone: an ants/bees model falls back to the tutorial's set in the data root
    (tmp_path / "root").mkdir()
    data.rename(tmp_path / "root" / "hymenoptera_data")
    assert main(["evaluate", str(model)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"dataset {tmp_path / 'root' / 'hymenoptera_data'} (the tutorial's ants/bees set "
                          f"(this model's dataset {data} is not here))")
    assert "val accuracy" in out


def test_evaluate_without_the_models_dataset_or_the_tutorials_classes_says_what_to_pass(env, tmp_path, capsys):
    data = make_dataset(tmp_path / "three", classes=("ants", "bees", "wasps"), n_train=3, n_val=2)
    model = tmp_path / "m.pt"
    assert main(["train", "--data-dir", str(data), "--backbone-weights", "none", "--mode", "fixed",
                 "--epochs", "1", "--batch-size", "4", "--image-size", "64", "--output", str(model)]) == 0
    capsys.readouterr()
    data.rename(tmp_path / "moved")
    assert main(["evaluate", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: this model's dataset") and "pass --data-dir" in err and "wasps" in err
    assert not (tmp_path / "data").exists()  # nothing downloaded


def test_a_bug_keeps_its_traceback(env, monkeypatch):
    import bees_ants.cli as cli

    def broken(args):
        raise ValueError("a bug")
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["export"].set_defaults(func=broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["export", "x.pt"])


def test_fine_tuning_starts_from_its_own_recipe_unless_told_otherwise():
    """The measured fine-tune recipe (config.MODE_DEFAULTS) applies to settings not given; options and
    presets win; the fixed extractor keeps TrainConfig's rate."""
    settings = Settings()
    finetune = train_config(parse_train("--mode", "finetune"), settings)[0]
    assert (finetune.lr, finetune.backbone_lr_scale, finetune.patience) == (0.003, 0.1, 0)
    assert (finetune.epochs, finetune.lr_schedule, finetune.freeze_bn) == (10, "cosine", True)
    given = train_config(parse_train("--mode", "finetune", "--lr", "0.005"), settings)[0]
    assert (given.lr, given.backbone_lr_scale) == (0.005, 0.1)
    tutorial = train_config(parse_train("--mode", "finetune", "--preset", "tutorial"), settings)[0]
    assert (tutorial.lr, tutorial.backbone_lr_scale, tutorial.batch_size) == (0.001, 1.0, 4)
    assert (tutorial.lr_schedule, tutorial.freeze_bn, tutorial.epochs) == ("step", False, 25)
    fixed = train_config(parse_train("--mode", "fixed"), settings)[0]
    assert (fixed.lr, fixed.backbone_lr_scale, fixed.patience) == (TrainConfig(data_dir="").lr, 1.0, 0)
