"""Training the last blocks on cached activations, AdamW, early stopping and resume (issue #10)."""
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from bees_ants.checkpoint import load_checkpoint
from bees_ants.cli import main
from bees_ants.config import ARCHS, ConfigError, TrainConfig
from bees_ants.data import train_batches
from bees_ants.models import after_cut, before_cut, blocks, build_model
from bees_ants.resume import ResumeError, load_resume_state, resume_config, resume_path
from bees_ants.train import TrainingRun, plan_cache
from conftest import finetune_config


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_splits_into_blocks_at_any_cut(arch):
    torch.manual_seed(0)
    model = build_model(arch, 2).eval()
    n = len(blocks(model))
    assert n >= 5
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole = model(x)
        for cut in (1, n // 2, n - 1):
            assert torch.allclose(after_cut(model, cut)(before_cut(model, cut)(x)), whole, atol=1e-5), cut
    # the split shares the model's own modules: training the tail trains the model
    assert all(any(p is q for q in model.parameters()) for p in after_cut(model, n - 1).parameters())


def test_last_blocks_learn_with_the_rest_frozen(tiny_dataset, tmp_path):
    run = TrainingRun(finetune_config(tiny_dataset, tmp_path, train_blocks=2, epochs=4, feature_views=2))
    torch.manual_seed(0)  # the run's seed: the same initial weights
    start = {k: v.clone() for k, v in build_model("resnet18", 2).state_dict().items()}
    records = list(run)
    assert max(r.val_acc for r in records) >= 0.875  # chance is 0.5
    assert "activations after block 3 of 5" in records[0].cache and "2 train view(s) + val" in records[0].cache
    final = run.model.state_dict()
    frozen = [k for k in final if k.startswith(("conv1", "bn1", "layer1", "layer2"))]
    trained = [k for k in final if k.startswith(("layer3", "layer4", "fc"))]
    # frozen blocks: weights and BatchNorm statistics untouched (eval mode); the last two moved
    assert frozen and all(torch.equal(final[k].cpu(), start[k]) for k in frozen)
    assert any(not torch.equal(final[k].cpu(), start[k]) for k in trained if k.endswith("weight"))


def test_cached_activations_give_the_full_models_loss_and_gradients(tiny_dataset, tmp_path):
    """One batch: the tail on cached (fp16) activations vs the whole model with the prefix frozen."""
    run = TrainingRun(finetune_config(tiny_dataset, tmp_path, train_blocks=2))
    run._setup()
    run.schedule.apply(run.model, 1)
    run._split_at(1)
    x, y = next(train_batches(run.train_split, run.preprocessing, 4))
    x = run._to_device(x)
    run.model.eval()
    run.tail.train()
    with torch.no_grad():
        activations = run.frozen(x)

    def loss_and_grads(out):
        run.model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(out, y)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in run.model.named_parameters() if p.grad is not None}

    full_loss, full_grads = loss_and_grads(run.model(x))
    assert all(k.startswith(("layer3", "layer4", "fc")) for k in full_grads)
    exact_loss, exact_grads = loss_and_grads(run.tail(run._from_cache(activations)))  # an fp32 cache
    assert exact_grads.keys() == full_grads.keys() and exact_loss == pytest.approx(full_loss, rel=1e-5)
    for k in full_grads:
        assert torch.allclose(exact_grads[k], full_grads[k], rtol=1e-4, atol=1e-5 * full_grads[k].abs().max()), k
    # the cache the run keeps (fp16): the same loss to 1%, every gradient pointing the same way
    # (measured: at most ~5% off in norm, in the first convolution after the cut, at random init)
    assert run.cache_dtype == torch.float16
    cached_loss, cached_grads = loss_and_grads(run.tail(run._from_cache(activations.to(run.cache_dtype))))
    assert cached_loss == pytest.approx(full_loss, rel=1e-2)
    for k in full_grads:
        cosine = nn.functional.cosine_similarity(cached_grads[k].flatten(), full_grads[k].flatten(), dim=0)
        assert cosine >= 0.99 and (cached_grads[k] - full_grads[k]).norm() <= 0.1 * full_grads[k].norm(), k


def test_cache_stays_within_the_memory_budget(tiny_dataset, tmp_path):
    mb = 2**20
    plan = plan_cache("x", image_bytes=100_000, n_train=16, n_val=8, views=3, budget=4 * mb)
    assert (plan.views, plan.val) == (2, True) and plan.total_bytes <= 4 * mb
    plan = plan_cache("x", image_bytes=100_000, n_train=16, n_val=8, views=3, budget=1 * mb)
    assert (plan.views, plan.val) == (0, True)
    # resnet18 after layer2 at 224 px: 128x28x28 fp16 = 200 kB an image; 2 MB hold the 8 val images only
    run = TrainingRun(finetune_config(tiny_dataset, tmp_path, train_blocks=2, memory_budget_mb=2, feature_views=3,
                                      epochs=3, image_size=None))
    records = list(run)
    assert run.cache.image_bytes == 128 * 28 * 28 * 2
    assert run.cache.total_bytes <= 2 * mb and run.cache.views == 0
    assert "no train view (frozen part runs every batch) + val" in records[0].cache
    assert max(r.val_acc for r in records) >= 0.875


def test_progressive_moves_the_cut_from_the_head_to_the_last_blocks(tiny_dataset, tmp_path):
    run = TrainingRun(finetune_config(tiny_dataset, tmp_path, mode="progressive", frozen_epochs=1, train_blocks=1,
                                      epochs=2))
    caches = [r.cache for r in run]
    assert caches[0].startswith("cache of pooled features") and "after block 4 of 5" in caches[1]


def test_adamw_learns_and_is_recorded(tiny_dataset, tmp_path):
    run = TrainingRun(finetune_config(tiny_dataset, tmp_path, optimizer="adamw", lr=0.001, backbone_lr_scale=0.1,
                             label_smoothing=0.1, lr_schedule="cosine"))
    records = list(run)
    assert isinstance(run.optimizer, torch.optim.AdamW)
    backbone, head = run.optimizer.param_groups
    assert backbone["initial_lr"] == pytest.approx(0.1 * head["initial_lr"]) and head["initial_lr"] == 0.001
    assert max(r.val_acc for r in records) >= 0.875 and records[-1].train_loss < records[0].train_loss
    hyper = load_checkpoint(run.checkpoint_path).meta["hyperparameters"]
    assert hyper["optimizer"] == "adamw" and hyper["lr_schedule"] == "cosine"


def test_new_settings_are_checked():
    for bad in (dict(optimizer="adam"), dict(lr_schedule="linear"), dict(patience=-1), dict(train_blocks=-1),
                dict(backbone_lr_scale=0), dict(label_smoothing=1)):
        with pytest.raises(ConfigError):
            TrainConfig(data_dir="", **bad)


def test_early_stopping_says_why(tiny_dataset, tmp_path):
    # A far too large learning rate: the val loss stops falling within a few epochs.
    run = TrainingRun(finetune_config(tiny_dataset, tmp_path, mode="fixed", lr=20.0, patience=2, epochs=20,
                             stop_metric="val_loss"))
    records = list(run)
    assert run.status == "completed" and len(records) < 20
    reason = "no val loss improvement for 2 epochs"
    assert reason in records[-1].stop_reason and not any(r.stop_reason for r in records[:-1])
    losses = [r.val_loss for r in records]
    assert min(losses[-2:]) >= min(losses[:-2])  # the rule held: the last two did not improve
    meta = load_checkpoint(run.checkpoint_path).meta
    assert reason in meta["stop_reason"] and len(meta["history"]) == len(records)
    assert not resume_path(run.checkpoint_path).exists()  # completed: nothing to resume


def test_frozen_batchnorm_keeps_its_statistics(small_dataset, tmp_path):
    def layer4_running_means(**kw):
        run = TrainingRun(finetune_config(small_dataset, tmp_path / str(kw), train_blocks=1, epochs=1, **kw))
        list(run)
        sd = load_checkpoint(run.checkpoint_path).state_dict
        assert load_checkpoint(run.checkpoint_path).meta["hyperparameters"]["freeze_bn"] == kw.get("freeze_bn", False)
        return [v for k, v in sd.items() if k.startswith("layer4") and k.endswith("running_mean")]

    # random init: BatchNorm starts at mean 0; train-mode BatchNorm moves it, frozen BatchNorm does not
    assert all(torch.count_nonzero(m) == 0 for m in layer4_running_means(freeze_bn=True))
    assert all(torch.count_nonzero(m) > 0 for m in layer4_running_means())


@pytest.mark.timeout(1200)  # three fine-tunes (3 + 2 + 1 epochs) at the speed of a loaded 2-core machine
def test_cancelled_run_resumes_where_it_stopped(tiny_dataset, tmp_path):
    whole = TrainingRun(finetune_config(tiny_dataset, tmp_path / "a", epochs=3))
    expected = [(r.epoch, r.train_loss, r.val_loss) for r in whole]

    cancel = threading.Event()
    first = TrainingRun(finetune_config(tiny_dataset, tmp_path / "b", epochs=3), cancel=cancel)
    for record in first:
        if record.epoch == 2:
            cancel.set()  # stops at the first batch of epoch 3
    assert first.status == "cancelled" and len(first.history) == 2
    assert resume_path(first.checkpoint_path).is_file()
    state = load_resume_state(first.checkpoint_path)
    assert state["epoch"] == 2 and state["optimizer"]["state"]  # SGD momentum buffers kept
    assert "best" not in state  # the best weights are the checkpoint's: not a second copy

    resumed = TrainingRun(resume_config(first.checkpoint_path))
    records = list(resumed)
    assert resumed.status == "completed" and resumed.checkpoint_path == first.checkpoint_path
    assert [r.epoch for r in records] == [1, 2, 3] and len(resumed.history) == 3
    # same seed, restored optimizer, scheduler and random state: the very run that was not interrupted
    for (e, train_loss, val_loss), r in zip(expected, records, strict=True):
        assert r.epoch == e and r.train_loss == pytest.approx(train_loss, rel=1e-4)
        assert r.val_loss == pytest.approx(val_loss, rel=1e-4)
    assert records[-1].train_loss < records[0].train_loss and max(r.val_acc for r in records[2:]) >= 0.875
    assert len(load_checkpoint(resumed.checkpoint_path).meta["history"]) == 3
    assert not resume_path(resumed.checkpoint_path).exists()
    with pytest.raises(ResumeError, match="nothing to resume"):
        resume_config(resumed.checkpoint_path)


def test_the_best_so_far_comes_from_the_checkpoint_or_an_older_state_file(small_dataset, tmp_path):
    import torch

    from bees_ants.checkpoint import write_atomically
    cancel = threading.Event()
    run = TrainingRun(finetune_config(small_dataset, tmp_path, mode="fixed", lr=0.02, epochs=3), cancel=cancel)
    for _ in run:
        cancel.set()
    ckpt = load_checkpoint(run.checkpoint_path)
    # A resume state of the first format carried its own copy of the best: it still resumes.
    state = load_resume_state(run.checkpoint_path)
    older = {**state, "format": "bees_ants-resume/1",
             "best": {**ckpt.meta["best"], "state_dict": {k: v.clone() for k, v in ckpt.state_dict.items()}}}
    write_atomically(resume_path(run.checkpoint_path), lambda f: torch.save(older, f))
    resumed = TrainingRun(resume_config(run.checkpoint_path))
    resumed._setup()
    assert resumed.best.epoch == 1 and all(torch.equal(v, ckpt.state_dict[k]) for k, v in resumed.best.state_dict.items())
    # Without its checkpoint, a run has no best to go on from: said, not a KeyError.
    write_atomically(resume_path(run.checkpoint_path), lambda f: torch.save(state, f))
    Path(run.checkpoint_path).unlink()
    with pytest.raises(ResumeError, match="without the run's checkpoint"):
        TrainingRun(resume_config(run.checkpoint_path))._setup()


def test_cli_resumes_an_interrupted_run(tiny_dataset, tmp_path, capsys):
    cancel = threading.Event()
    run = TrainingRun(finetune_config(tiny_dataset, tmp_path, mode="fixed", lr=0.02, epochs=3), cancel=cancel)
    for _ in run:
        cancel.set()  # as Ctrl-C or a cancel would, after the first epoch
    assert run.status == "cancelled" and len(run.history) == 1
    assert main(["train", "--resume", run.checkpoint_path]) == 0
    out = capsys.readouterr().out
    assert f"resuming {run.checkpoint_path}" in out and "epoch   3/3" in out
    meta = load_checkpoint(run.checkpoint_path).meta
    assert meta["status"] == "completed" and [h["epoch"] for h in meta["history"]] == [1, 2, 3]
    assert main(["train", "--resume", run.checkpoint_path]) == 2  # nothing left to resume: said, not a traceback
    assert "nothing to resume" in capsys.readouterr().err
