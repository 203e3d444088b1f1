"""Which settings a run trains with, decided once (config.recipe) for the CLI and the app: what the
user gave wins over a preset, which wins over the mode's defaults, which win over the
installation's, which win over TrainConfig's; with no mode given, a CPU trains the fixed extractor."""
from pathlib import Path

import pytest

from app_fixtures import app_settings
from bees_ants import ui
from bees_ants.cli import build_parser, train_config
from bees_ants.config import MODE_DEFAULTS, ConfigError, TrainConfig, arch_of_file, recipe
from bees_ants.settings import Settings
from bees_ants.ui.train_tab import FORM, form_values_from
from bees_ants.visitors import Visitor

FIELDS = TrainConfig(data_dir="")  # TrainConfig's own defaults
FINETUNE = MODE_DEFAULTS["finetune"]


def test_each_layer_wins_over_the_ones_below():
    mode = recipe({"data_dir": "d", "mode": "finetune"}, defaults={"lr": 0.5, "out_dir": "w"})
    assert (mode.lr, mode.backbone_lr_scale, mode.patience) == (FINETUNE["lr"], FINETUNE["backbone_lr_scale"],
                                                                 FINETUNE["patience"])  # the mode over the installation
    assert (mode.out_dir, mode.momentum) == ("w", FIELDS.momentum)  # the installation over the fields
    preset = recipe({"data_dir": "d", "mode": "finetune"}, preset="tutorial")
    assert (preset.lr, preset.backbone_lr_scale, preset.patience, preset.batch_size) == (0.001, 1.0, 0, 4)
    given = recipe({"data_dir": "d", "mode": "finetune", "lr": 0.005, "batch_size": 8}, preset="tutorial")
    assert (given.lr, given.batch_size, given.feature_views) == (0.005, 8, 25)  # the rest is still the preset's
    fixed = recipe({"data_dir": "d", "mode": "fixed"}, defaults={"lr": 0.5})
    assert (fixed.lr, fixed.backbone_lr_scale) == (0.5, FIELDS.backbone_lr_scale)  # fixed has no defaults of its own


def test_with_no_mode_given_a_cpu_trains_the_fixed_extractor():
    on_cpu = recipe({"data_dir": "d"}, on_cpu=True)
    assert (on_cpu.mode, on_cpu.lr, on_cpu.patience) == ("fixed", FIELDS.lr, FIELDS.patience)
    with_gpu = recipe({"data_dir": "d"}, on_cpu=False)
    assert (with_gpu.mode, with_gpu.lr, with_gpu.patience) == ("finetune", FINETUNE["lr"], FINETUNE["patience"])
    assert recipe({"data_dir": "d", "mode": "finetune"}, on_cpu=True).mode == "finetune"  # a given mode wins


def test_the_tutorial_preset_is_the_tutorials_recipe():
    cfg = recipe({"data_dir": "x"}, preset="tutorial")
    assert (cfg.batch_size, cfg.lr, cfg.momentum, cfg.step_size, cfg.gamma, cfg.epochs) == (4, 0.001, 0.9, 7, 0.1, 25)
    assert cfg.feature_views == cfg.epochs  # fresh augmentation every epoch, as the tutorial does
    with pytest.raises(ConfigError, match="preset must be one of"):
        recipe({"data_dir": "x"}, preset="fastest")


def test_none_given_is_a_value_and_bad_values_name_their_setting():
    assert recipe({"data_dir": "d", "backbone_weights": None}).backbone_weights is None  # random init
    with pytest.raises(ConfigError, match="mode must be one of"):
        recipe({"data_dir": "d", "mode": "half"})
    with pytest.raises(ConfigError, match="epochs"):
        recipe({"data_dir": "d", "epochs": 0}, preset="tutorial")


def test_a_weights_file_name_says_its_backbone():
    assert arch_of_file(Path("w/mobilenet_v3_large-5c1a4163.pth")) == "mobilenet_v3_large"
    assert arch_of_file(Path("mobilenet_v2-b0353104.pth")) == "mobilenet_v2"
    assert arch_of_file(Path("my-weights.pth")) is None


# -- the app's form and the CLI: the same recipe ------------------------------------------------------

@pytest.fixture(scope="module")
def tab(tmp_path_factory):
    app = ui.build_app(app_settings(tmp_path_factory.mktemp("recipe")))
    return next(f for f in app.fns.values() if f.api_name == "tick").fn.__self__  # the TrainTab


def test_the_form_starts_from_the_recipe_for_this_device(tab):
    """This machine trains on its CPU: the form starts in fixed mode with that mode's settings."""
    shown = {name: widget.value for name, widget in tab.form.items()}
    assert list(shown) == list(FORM)
    expected = form_values_from(recipe({}, on_cpu=True, defaults={
        "data_dir": shown["dataset"], "arch": shown["arch"],
        "backbone_weights": None if shown["backbone"] == "none" else shown["backbone"]}))
    assert shown == expected and shown["mode"] == "fixed"


def test_the_form_and_the_command_line_make_the_same_config(tab):
    """The form's values for a mode (what picking it sets), submitted, are what the CLI trains with
    for that mode and no other options; settings the form does not show come from the recipe too."""
    visitor = Visitor("session:recipe")
    for mode in ("finetune", "fixed"):
        form = {**{name: widget.value for name, widget in tab.form.items()},
                **form_values_from(recipe({"mode": mode, "data_dir": ""}))}
        form["dataset"], form["backbone"] = str(tab.settings.dataset_dirs[0]), "none"
        _, from_form = tab.form_config(visitor, form)
        installed = Settings(image_size=tab.settings.image_size)  # BEES_ANTS_IMAGE_SIZE, as the app has it
        args = build_parser(installed).parse_args(["train", "--mode", mode, "--backbone-weights", "none"])
        from_cli, _ = train_config(args, installed)
        differ = {k for k, v in vars(from_form).items() if getattr(from_cli, k) != v}
        assert differ == {"data_dir", "out_dir"}, mode  # where the data is and where the visitor's checkpoints go
        assert from_form.backbone_lr_scale == MODE_DEFAULTS.get(mode, {}).get("backbone_lr_scale", 1.0)
