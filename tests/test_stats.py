"""Early stopping on what the user sees, Wilson intervals and cross-validation folds (issue 21)."""
from collections import Counter

import pytest

from bees_ants.checkpoint import load_checkpoint
from bees_ants.cli import build_parser, main, train_config
from bees_ants.config import ConfigError, TrainConfig
from bees_ants.settings import Settings
from bees_ants.stats import (epochs_since_best, improves, stop_reason, stratified_folds, wilson_interval,
                             within_interval)

# The fine-grained 5-class run: val accuracy rose every epoch while val loss rose too.
CLIMBING = [(0.540, 1.10), (0.560, 1.12), (0.585, 1.18), (0.600, 1.25), (0.620, 1.31), (0.640, 1.40), (0.655, 1.46)]


def test_a_run_whose_accuracy_still_climbs_is_not_stopped():
    for e in range(1, len(CLIMBING) + 1):
        assert stop_reason(CLIMBING[:e], 3, "val_acc") == ""
        assert stop_reason(CLIMBING[:e], 3, "both") == ""
    # the old rule, on val loss alone, ended it after epoch 4 (3 epochs above the first loss)
    assert stop_reason(CLIMBING[:3], 3, "val_loss") == ""
    assert stop_reason(CLIMBING[:4], 3, "val_loss") == "stopped early after epoch 4: no val loss improvement for 3 epochs"


def test_accuracy_rule_stops_after_patience_epochs_without_a_better_epoch():
    # ants/bees with the old default: best in epoch 1, then lower accuracy
    scores = [(0.954, 0.167), (0.902, 0.310), (0.941, 0.374), (0.915, 0.328), (0.889, 0.444)]
    assert [bool(stop_reason(scores[:e], 3)) for e in range(1, 6)] == [False, False, False, True, True]
    assert "no val accuracy (ties: lower val loss) improvement for 3 epochs" in stop_reason(scores[:4], 3)
    assert stop_reason(scores, 0) == ""  # patience 0: never


def test_equal_accuracy_with_a_lower_loss_is_progress():
    plateau = [(0.9, 0.50), (0.9, 0.40), (0.9, 0.30), (0.9, 0.20)]
    assert stop_reason(plateau, 2) == "" and epochs_since_best(plateau, "val_acc") == 0
    flat = [(0.9, 0.50), (0.9, 0.50), (0.9, 0.60), (0.88, 0.40)]
    assert stop_reason(flat[:3], 2).startswith("stopped early after epoch 3")
    # "both" waits while either improves: the loss fell in epoch 4
    assert stop_reason(flat, 3, "both") == "" and stop_reason(flat, 3, "val_acc")


def test_best_epoch_follows_the_same_metric():
    assert improves((0.9, 0.5), (0.8, 0.1)) and improves((0.9, 0.4), (0.9, 0.5))
    assert not improves((0.9, 0.5), (0.9, 0.5)) and not improves((0.8, 0.1), (0.9, 0.5))
    assert improves((0.8, 0.1), (0.9, 0.5), "val_loss") and not improves((0.9, 0.5), (0.8, 0.1), "val_loss")
    assert improves((0.9, 0.5), (0.8, 0.1), "both")  # "both" keeps the checkpoint the user sees as best
    assert improves((0.5, 9.0), None)


def test_wilson_interval():
    # 0 of 10 and 10 of 10: the textbook bounds z^2 / (n + z^2) = 0.2775
    assert wilson_interval(0.0, 10) == (0.0, pytest.approx(0.27755, abs=1e-4))
    assert wilson_interval(1.0, 10) == (pytest.approx(0.72245, abs=1e-4), 1.0)
    # the example: 146 of 153 right is good to about ±0.03
    lo, hi = wilson_interval(146 / 153, 153)
    assert lo == pytest.approx(0.9085, abs=1e-3) and hi == pytest.approx(0.9777, abs=1e-3)
    assert 0.025 < (hi - lo) / 2 < 0.04
    for p, n in ((0.3, 20), (0.77, 153), (0.5, 1000)):
        lo, hi = wilson_interval(p, n)
        assert 0 <= lo < p < hi <= 1
        assert (lo, hi) == pytest.approx(tuple(1 - x for x in reversed(wilson_interval(1 - p, n))))
        assert hi - lo > wilson_interval(p, 4 * n)[1] - wilson_interval(p, 4 * n)[0]  # more images, narrower
    assert within_interval(0.954, 153, 0.961) and not within_interval(0.954, 153, 0.88)
    assert wilson_interval(0.5, 0) == (0.0, 1.0)


def test_folds_are_stratified_disjoint_and_cover_every_image():
    labels = [0] * 203 + [1] * 194  # ants/bees pooled: 397 images
    folds = stratified_folds(labels, 5, seed=0)
    assert len(folds) == 5
    every = [i for f in folds for i in f]
    assert sorted(every) == list(range(len(labels)))  # disjoint and covering
    for f in folds:
        c = Counter(labels[i] for i in f)
        assert abs(c[0] - 203 / 5) <= 1 and abs(c[1] - 194 / 5) <= 1
        assert abs(len(f) - len(labels) / 5) <= 1
    assert stratified_folds(labels, 5, seed=0) == folds and stratified_folds(labels, 5, seed=1) != folds
    three = stratified_folds([0] * 7 + [1] * 5 + [2] * 3, 3)
    assert sorted(i for f in three for i in f) == list(range(15)) and [len(f) for f in three] == [5, 5, 5]
    with pytest.raises(ValueError):
        stratified_folds(labels, 1)


def test_new_options_are_checked():
    with pytest.raises(ConfigError):
        TrainConfig(data_dir="", stop_metric="val_f1")


def test_cli_options_reach_the_checkpoint(tiny_dataset, tmp_path, capsys):
    args = build_parser().parse_args(["train", "--stop-metric", "both", "--freeze-bn", "--patience", "2"])
    config, _ = train_config(args, Settings.from_env())
    assert (config.stop_metric, config.freeze_bn, config.patience) == ("both", True, 2)
    args = build_parser().parse_args(["train", "--mode", "finetune", "--no-freeze-bn"])
    assert train_config(args, Settings.from_env())[0].freeze_bn is False

    out = tmp_path / "m.pt"
    assert main(["train", "--data-dir", str(tiny_dataset), "--arch", "resnet18", "--backbone-weights", "none",
                 "--mode", "finetune", "--train-blocks", "1", "--epochs", "2", "--batch-size", "4",
                 "--stop-metric", "val_loss", "--freeze-bn", "--patience", "1", "--image-size", "64",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "early stop: patience 1 on val loss" in printed and "BatchNorm statistics frozen" in printed
    assert "; input 64 px" in printed
    assert "95% CI" in printed.split("done: ")[1]
    meta = load_checkpoint(out).meta
    hyper = meta["hyperparameters"]
    assert (hyper["stop_metric"], hyper["freeze_bn"], hyper["patience"], hyper["image_size"]) == ("val_loss", True, 1, 64)
    assert (meta["preprocessing"]["resize_size"], meta["preprocessing"]["crop_size"]) == (73, 64)  # 256:224


def checkpoint_meta(acc: float, n_val: int, created: str) -> dict:
    return {"arch": "mobilenet_v2", "mode": "finetune", "class_names": ["ants", "bees"], "created": created,
            "best": {"val_acc": acc, "val_loss": 0.2, "epoch": 2}, "history": [],
            "preprocessing": {"crop_size": 224, "resize_size": 232, "mean": [0.485, 0.456, 0.406],
                              "std": [0.229, 0.224, 0.225]}, "hyperparameters": {**{k: v for k, v in vars(TrainConfig(data_dir="")).items() if k != "data_dir"}},
            "dataset": {"root": "/data/hymenoptera_data",
                        "counts": {"train": {"ants": 124, "bees": 120}, "val": {"ants": 70, "bees": n_val - 70}}}}


def test_model_card_compare_and_evaluation_say_how_sure_the_accuracy_is():
    from bees_ants import hub
    from bees_ants.predict import Evaluation
    from bees_ants.views.comparison import comparison_markdown, run_name
    from bees_ants.views.evaluation import evaluation_markdown, model_markdown
    a, b, c = (checkpoint_meta(146 / 153, 153, "2026-12-02T10:00"), checkpoint_meta(147 / 153, 153, "2026-12-02T11:00"),
               checkpoint_meta(0.85, 153, "2026-12-02T12:00"))
    assert "95% CI 90.9%–97.8%, 153 images" in model_markdown(a)
    table = comparison_markdown([a, b, c])
    assert "| 95% interval |" in table.replace("**95% interval**", "95% interval")
    # b is the best; a lies inside its interval, c (0.85) does not
    inside = table.split("**Inside the interval:**")[1]
    assert run_name(1, a) in inside and run_name(3, c) not in inside
    assert "Inside the interval" not in comparison_markdown([b, c])

    ev = Evaluation("val", ["ants", "bees"], accuracy=146 / 153, loss=0.2, confusion=[[68, 2], [5, 78]], paths=[],
                    true=[0] * 70 + [1] * 83, predicted=[], confidence=[], losses=[])
    assert "95% confidence interval 90.9%–97.8%" in evaluation_markdown(ev, a)
    card = hub.model_card("me/ants", hub.hub_config(a), None)
    assert "| best val accuracy | 0.9542 (epoch 2; 95% CI 90.9%–97.8%, 153 images) |" in card
