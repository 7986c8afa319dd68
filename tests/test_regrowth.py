"""--regrow FRACTION (train/pruners.py: exchange, regrow_fraction, momentum_scores; train/models.py:
MaskDenseGradient): drop-and-grow of synapses during gradual global pruning, docs/dpap.md sec. 6.11."""
import math

import numpy as np
import pytest
import torch

from dpap_deploy.train.dpap import DPAPConfig
from dpap_deploy.train.models import SpikingMLP
from dpap_deploy.train.pruners import (dense_count, exchange, magnitude_step, make_pruner, momentum_scores,
                                       regrow_fraction)


def test_dense_gradient_reaches_pruned_weights_and_leaves_live_ones_as_they_were():
    """``y = (w * m) x``, loss ``sum(g * y)``: ``dL/d(w * m) = g x^T`` everywhere. Through the plain
    mask a pruned weight gets 0; with ``dense_gradient`` it gets its entry of ``g x^T``, and a live
    weight gets the same gradient either way."""
    x = torch.tensor([[1.0, 2.0, 3.0]])  # (B, F)
    g = torch.tensor([[0.5, -1.0]])  # dL/dy, (B, N)
    want = g.T @ x  # (N, F): [[0.5, 1, 1.5], [-1, -2, -3]]
    grads = {}
    for dense in (False, True):
        model = SpikingMLP([3, 2])
        with torch.no_grad():
            model.layers[0].weight.fill_(0.3)
            model.masks[0][0, 1] = False
            model.masks[0][1, 2] = False
        model.apply_masks()
        model.dense_gradient = dense
        w = model.masked_weights()[0]
        assert w[0, 1].item() == 0.0 and w[1, 2].item() == 0.0  # the forward is masked either way
        (torch.nn.functional.linear(x, w) * g).sum().backward()
        grads[dense] = model.layers[0].weight.grad.clone()
    torch.testing.assert_close(grads[True], want)
    torch.testing.assert_close(grads[False], want * torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]))


def test_regrow_fraction_is_rigl_cosine_over_the_pruning_epochs():
    assert regrow_fraction(0.4, 4, 5, 15) == 0.0  # before e0
    assert regrow_fraction(0.4, 5, 5, 15) == pytest.approx(0.4)
    assert regrow_fraction(0.4, 10, 5, 15) == pytest.approx(0.2)  # half way: alpha / 2
    assert regrow_fraction(0.4, 14, 5, 15) == pytest.approx(0.2 * (1 + math.cos(math.pi * 0.9)))
    assert regrow_fraction(0.4, 15, 5, 15) == 0.0  # the recovery tail
    assert regrow_fraction(0.0, 7, 5, 15) == 0.0


def _hand_model():
    """A 3-4-2 MLP: layer 0 live weights |w| = 1..8 at known places, unit 3 of layer 0 removed (no
    live input synapse), layer 1 with every synapse live."""
    model = SpikingMLP([3, 4, 2])
    with torch.no_grad():
        w0 = torch.tensor([[1.0, 0.0, 2.0], [3.0, 4.0, 0.0], [0.0, 5.0, 6.0], [0.0, 0.0, 0.0]])
        model.layers[0].weight.copy_(w0)
        model.masks[0].copy_(w0 != 0)
        model.layers[1].weight.fill_(7.0)
    return model


def test_exchange_drops_the_weakest_and_regrows_the_highest_scored_between_live_units():
    """Four live weights of layer 0 out of 6 (all 8 of layer 1 are far larger): ``fraction`` 0.15 of
    14 live rounds to 2; the two smallest (|w| 1 and 2) go, and the two highest-scored pruned
    positions between units still in the network come back at 0. The highest score of all sits on
    removed unit 3's row and may not regrow; nor may the position just dropped."""
    model = _hand_model()
    grow = torch.zeros(4, 3)
    grow[3, 0] = 100.0  # onto removed unit 3: refused
    grow[0, 1] = 9.0
    grow[1, 2] = 8.0
    grow[2, 0] = 1.0
    scores = {(model.layers[0], "weight"): grow, (model.layers[1], "weight"): torch.zeros(2, 4)}
    assert exchange(model, [0, 1], 0.15, scores) == 2
    m0 = model.masks[0]
    assert m0.tolist() == [[False, True, False], [True, True, True], [False, True, True], [False, False, False]]
    assert model.layers[0].weight[0, 1].item() == 0.0 and model.layers[0].weight[1, 2].item() == 0.0
    assert int(model.masks[1].sum()) == 8  # the strong layer kept all its synapses
    live = int(sum(int(m.sum()) for m in model.masks))
    assert live == 14


def test_exchange_regrows_no_more_than_have_a_score():
    model = _hand_model()
    grow = torch.zeros(4, 3)
    grow[2, 0] = 1.0  # one candidate with a gradient
    scores = {(model.layers[0], "weight"): grow, (model.layers[1], "weight"): torch.zeros(2, 4)}
    assert exchange(model, [0, 1], 0.5, scores) == 1
    assert bool(model.masks[0][2, 0]) and not bool(model.masks[0][0, 0])  # |w| = 1 went, (2, 0) came
    empty = {k: torch.zeros_like(v) for k, v in scores.items()}
    before = [m.clone() for m in model.masks]
    assert exchange(model, [0, 1], 0.5, empty) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.masks))


def test_magnitude_step_with_regrowth_keeps_the_schedules_sparsity_and_moves_synapses():
    """Over a run's pruning epochs, the live count with regrowth equals the count without it (the
    cubic schedule's), while the masks differ: regrowth moved synapses."""
    torch.manual_seed(0)
    base = SpikingMLP([20, 16, 8, 4])
    hidden = [0, 1]
    dense = dense_count(base, hidden)
    plain, regrown = base.resized(base.widths()), base.resized(base.widths())
    plain.load_state_dict(base.state_dict())
    regrown.load_state_dict(base.state_dict())
    moved = 0
    for epoch in range(12):
        grow = {(regrown.layers[l], "weight"): torch.rand_like(regrown.layers[l].weight) for l in hidden}
        magnitude_step(plain, hidden, 0.8, epoch, 2, 12, dense_total=dense)
        magnitude_step(regrown, hidden, 0.8, epoch, 2, 12, dense_total=dense, regrow=0.3, grow_scores=grow)
        n_plain = sum(int(plain.masks[l].sum()) for l in hidden)
        n_regrown = sum(int(regrown.masks[l].sum()) for l in hidden)
        assert n_plain == n_regrown, epoch
        moved = max(moved, sum(int((plain.masks[l] != regrown.masks[l]).sum()) for l in hidden))
    assert n_plain == round(0.2 * dense)
    assert moved > 0


def test_momentum_scores_read_adams_first_moment_of_pruned_weights():
    """A run with ``dense_gradient`` has Adam moments at pruned weights (the gradient they would
    get), which :func:`momentum_scores` hands over; without it those moments stay 0."""
    torch.manual_seed(0)
    x = (torch.rand(6, 4, 5) < 0.5).float()  # (T, B, F)
    seen = {}
    for dense in (False, True):
        model = SpikingMLP([5, 6, 3])
        with torch.no_grad():
            model.masks[0][:, :2] = False
        model.apply_masks()
        model.dense_gradient = dense
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            scores, _ = model(x)
            (scores.sum() + sum(p.sum() for p in model.masked_weights())).backward()
            opt.step()
            model.apply_masks()
        m = momentum_scores(model, opt, [0])[(model.layers[0], "weight")]
        seen[dense] = float(m[:, :2].sum())
        assert model.layers[0].weight[:, :2].abs().sum().item() == 0.0  # pruned weights stayed 0
    assert seen[False] == 0.0 and seen[True] > 0.0
    assert momentum_scores(SpikingMLP([5, 3]), torch.optim.Adam(SpikingMLP([5, 3]).parameters()), [0]) is None


def test_only_global_ranking_pruners_regrow_and_the_option_is_checked(tmp_path):
    from dpap_deploy.errors import DpapError
    from dpap_deploy.pipeline import RunConfig, run_pipeline

    assert {n for n in ("dense", "dpap", "magnitude", "dpap-magnitude", "dpap-synops")
            if make_pruner(n, DPAPConfig(regrow=0.3), 0.5).dense_gradient} == {"magnitude", "dpap-magnitude",
                                                                                 "dpap-synops"}
    assert not make_pruner("magnitude", DPAPConfig(), 0.5).dense_gradient  # regrow 0: off
    with pytest.raises(ValueError, match=r"DPAPConfig.regrow must be in \[0, 1\), got 1.0"):
        DPAPConfig(regrow=1.0)
    base = dict(target="loihi-sim", epochs=2, time_steps=4, max_test=4, force=True)
    with pytest.raises(DpapError, match="--regrow 0.3: regrowth exchanges synapses under a global ranking, which "
                                        "dpap-magnitude, dpap-synops, magnitude have; this run's pruner is 'dpap'"):
        run_pipeline(RunConfig(out=str(tmp_path / "a"), regrow=0.3, **base), stop_after="model")
    with pytest.raises(DpapError, match=r"--regrow must be in \[0, 1\)"):
        run_pipeline(RunConfig(out=str(tmp_path / "b"), regrow=1.5, pruner="magnitude", **base), stop_after="model")
    ctx = run_pipeline(RunConfig(out=str(tmp_path / "c"), regrow=0.3, pruner="dpap-magnitude", **base),
                       stop_after="model")
    assert ctx.dpap_cfg.regrow == 0.3


def test_a_run_with_regrowth_reaches_its_sparsity_and_lava_equals_the_emulator(tmp_path):
    """``dpap-export --pruner dpap-magnitude --target-sparsity 0.8 --regrow 0.3`` on digits: the hidden
    synapses end at the target (regrowth exchanges, it does not add), and Lava equals the emulator."""
    import json
    import os

    from dpap_deploy.cli import main

    out = str(tmp_path / "rg")
    assert main(["--target", "loihi-sim", "--epochs", "8", "--hidden", "32,16", "--time-steps", "12",
                 "--max-test", "24", "--lr", "0.01", "--batch-size", "64", "--quiet", "--pruner", "dpap-magnitude",
                 "--target-sparsity", "0.8", "--regrow", "0.3", "--dpap-schedule", "run-length",
                 "--out", out]) == 0
    rep = json.load(open(os.path.join(out, "report.json")))
    dense_hidden = 64 * 32 + 32 * 16
    hidden = sum(l["synapses"] for l in rep["model"]["layers"][:-1])
    assert hidden <= round(0.2 * dense_hidden)
    assert rep["accuracy"]["lava"] == rep["accuracy"]["emulator"]
    assert rep["accuracy"]["norse"] > 0.3  # 3x chance after 8 epochs of a 32-16 MLP (the test is the mechanism)


def test_a_regrowing_run_interrupted_and_resumed_equals_the_uninterrupted_one(digits, tmp_path):
    """Regrowth ranks by Adam's moments, which the checkpoint's optimiser state carries: a run of
    ``dpap-magnitude`` with regrowth, interrupted after its first exchange and resumed, ends with the
    same masks and weights as the run that was not interrupted, and regrowth did exchange synapses
    (the same run without it ends with other masks)."""
    import os
    import signal
    from dataclasses import replace

    from dpap_deploy.errors import TrainingInterrupted
    from dpap_deploy.train.checkpoint import load_checkpoint
    from dpap_deploy.train.dpap import RuleConstants
    from dpap_deploy.train.loop import TrainConfig, train

    cfg = TrainConfig(epochs=5, time_steps=6, hidden=(24, 16), lr=1e-2, seed=3, batch_size=64, fixed_point_eval=False)
    dpap = DPAPConfig(e0=1, r_init=2.0, fc_neuron=RuleConstants(0.6, 2.0, 13.0), regrow=0.4)

    def run(dp, **kw):
        return train(digits, cfg, dp, progress=False, method="dpap-magnitude", target_sparsity=0.7, **kw)

    whole = run(dpap)
    plain = run(replace(dpap, regrow=0.0))
    path = str(tmp_path / "cut.safetensors")

    def hook(e, b):
        if (e, b) == (2, 5):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        run(dpap, checkpoint=path, on_batch=hook)
    resumed = run(dpap, checkpoint=path, resume=load_checkpoint(path))
    for a, b in zip(whole.model.masks, resumed.model.masks):
        assert torch.equal(a, b)
    for (ka, va), (kb, vb) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert [m.shape for m in plain.model.masks] != [m.shape for m in whole.model.masks] or any(
        not torch.equal(a, b) for a, b in zip(plain.model.masks, whole.model.masks))
