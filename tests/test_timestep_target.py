"""Timestep pruning to a target (``--timestep-target``, docs/dpap.md sec. 7.5): eq. 8's importance
ranks the (unit, step) pairs, the lowest are silenced on a cubic schedule ending where the recovery
tail starts, no unit loses its last step."""
import json
import os

import numpy as np
import pytest
import torch

from dpap_deploy.errors import DpapError
from dpap_deploy.ir import NetworkIR
from dpap_deploy.train.dpap import DPAPConfig, DPAPState, RuleConstants, cubic_fraction, silence_lowest


def test_silence_lowest_by_hand():
    """12 pairs, half to go: the six lowest scores, ties to the earlier step; unit 1 (never
    spiked, all zeros) keeps its step 0, the best-scoring of equals, so no unit is removed."""
    s = torch.tensor([[0.0, 1, 5, 2], [0, 0, 0, 0], [3, 0.5, 4, 6]], dtype=torch.float64)
    alive = torch.ones(3, 4, dtype=torch.bool)
    got = silence_lowest(s, alive, 0.5)
    want = torch.tensor([[0, 0, 1, 1], [1, 0, 0, 0], [1, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(got, want)
    # three quarters: 9 pairs; every unit still keeps one step (its best: 5, 0 at step 0, 6)
    got = silence_lowest(s, alive, 0.75)
    assert torch.equal(got, torch.tensor([[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.bool))


def test_silence_lowest_counts_units_alive_and_keeps_what_is_silenced():
    """A removed unit (row all False) is outside the count; pairs silenced before stay silenced and
    count toward the fraction, even where their score is now the highest."""
    s = torch.tensor([[9.0, 1, 2, 3], [0, 0, 0, 0], [4, 5, 6, 7]], dtype=torch.float64)
    alive = torch.ones(3, 4, dtype=torch.bool)
    alive[1] = False  # removed by the neuron rule
    alive[0, 0] = False  # silenced at an earlier epoch
    got = silence_lowest(s, alive, 0.5)  # 8 pairs of units alive, 4 to be silenced: 3 more
    assert not got[1].any() and not got[0, 0]
    assert torch.equal(got, torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 1]], dtype=torch.bool))
    # a smaller fraction than already silenced changes nothing
    assert torch.equal(silence_lowest(s, got, 0.25), got)


def test_cubic_fraction_reaches_its_target_where_the_tail_starts():
    """0 before ``e0``, rising, the target exactly after epoch ``stop_epoch - 1``, and held after."""
    for e0, stop in ((1, 22), (2, 6), (5, 6)):
        f = [cubic_fraction(0.6, e, e0, stop) for e in range(stop + 3)]
        assert all(v == 0.0 for v in f[:e0])
        assert all(a < b for a, b in zip(f[e0 - 1:stop - 1], f[e0:stop]))
        assert f[stop - 1] == pytest.approx(0.6) and all(v == pytest.approx(0.6) for v in f[stop:])
    # by hand: e0 = 1, stop = 5 (span 4), after epoch 2: 0.6 * (1 - (1 - 2/4)^3) = 0.525
    assert cubic_fraction(0.6, 2, 1, 5) == pytest.approx(0.525)


def test_config_checks():
    with pytest.raises(ValueError, match=r"timestep_target must be in \(0, 1\), got 1.0"):
        DPAPConfig(timestep_target=1.0)
    with pytest.raises(ValueError, match="both choose how time steps are pruned"):
        DPAPConfig(timestep_target=0.5, timestep=RuleConstants(1.5, 2.0, 10.0))
    with pytest.raises(ValueError, match="timestep_target needs stop_epoch"):
        DPAPState([4, 3, 2], DPAPConfig(timestep_target=0.5))
    cfg = DPAPConfig(timestep_target=0.5, stop_epoch=8)
    assert cfg.timed and DPAPConfig.from_dict(cfg.to_dict()) == cfg  # as saved with a model


def test_state_reaches_the_target_in_every_layer_by_the_last_pruning_epoch():
    """An MLP's state fed random spikes every epoch: after each epoch each prunable layer has
    ``cubic_fraction`` of its (unit, step) pairs silenced (to one pair), the output layer none."""
    torch.manual_seed(0)
    cfg = DPAPConfig(e0=1, stop_epoch=5, timestep_target=0.6, prune_neurons=False, prune_synapses=False)
    st = DPAPState([10, 8, 6, 3], cfg)
    T = 5
    for epoch in range(7):
        x = (torch.rand(T, 4, 10) < 0.4).float()
        h1 = (torch.rand(T, 4, 8) < 0.3).float()
        h2 = (torch.rand(T, 4, 6) < 0.3).float()
        st.observe([(x, h1), (h1, h2), (h2, torch.zeros(T, 4, 3))])
        st.end_epoch(epoch)
        want = cubic_fraction(0.6, min(epoch, 4), 1, 5)
        for l, n in ((0, 8), (1, 6)):
            silenced = int((~st.time_alive[l]).sum())
            assert abs(silenced - want * n * T) <= 1, (epoch, l)
            assert st.time_alive[l].any(dim=1).all()  # no unit lost its last step
    assert 2 not in st.time_alive


def test_the_options_are_checked_naming_what_is_wrong(tmp_path):
    from dpap_deploy.pipeline import RunConfig, run_pipeline

    base = dict(target="loihi-sim", epochs=4, time_steps=4, max_test=4, force=True)
    cases = [
        (dict(timestep_target=1.5), r"--timestep-target must be in \(0, 1\)"),
        (dict(timestep_target=0.5, timestep_pruning="1.5,10"), "both choose how time steps are pruned"),
        (dict(timestep_target=0.5, pruner="magnitude", dpap_schedule="run-length"),
         "--timestep-target needs a pruner that gathers paper eq. 8's timestep importance \\(dpap, dpap-magnitude, "
         "dpap-synops\\); this run's pruner is 'magnitude'"),
        (dict(timestep_target=0.5), "only the run-length schedule has; this run's is 'fixed'"),
        (dict(timestep_target=0.5, model="ann-mlp", target="onnx"), "an ANN has none"),
        # the survival rule's option too: magnitude pruning would train without it, silently
        (dict(timestep_pruning="1.5,10", pruner="magnitude"), "--timestep-pruning needs a pruner that gathers paper "
         "eq. 8's timestep importance"),
        (dict(timestep_pruning="1.5,10", model="ann-mlp", target="onnx"), "--timestep-pruning prunes time steps of "
         "spiking networks; an ANN has none"),
    ]
    for i, (opts, msg) in enumerate(cases):
        with pytest.raises(DpapError, match=msg):
            run_pipeline(RunConfig(out=str(tmp_path / str(i)), **{**base, **opts}), stop_after="model")
    ctx = run_pipeline(RunConfig(out=str(tmp_path / "ok"), timestep_target=0.5, dpap_schedule="run-length", **base),
                       stop_after="model")
    assert ctx.dpap_cfg.timestep_target == 0.5 and ctx.dpap_cfg.stop_epoch == 3


def test_a_run_through_the_cli_silences_its_target_and_lava_equals_the_emulator(tmp_path):
    """``dpap-export --pruner dpap-magnitude --timestep-target 0.5`` on digits: the report's rho_t is
    the target (each layer's pairs silenced to one pair), the hold gates reach Lava, which equals the
    emulator, and relative energy is ``(1 - rho_w)(1 - rho_t)``."""
    from dpap_deploy.cli import main

    out = str(tmp_path / "tt")
    assert main(["--target", "loihi-sim", "--epochs", "8", "--hidden", "32,16", "--time-steps", "12",
                 "--max-test", "24", "--lr", "0.01", "--batch-size", "64", "--quiet", "--pruner", "dpap-magnitude",
                 "--target-sparsity", "0.6", "--timestep-target", "0.5", "--dpap-schedule", "run-length",
                 "--out", out]) == 0
    rep = json.load(open(os.path.join(out, "report.json")))
    ir = NetworkIR.load(os.path.join(out, "network.npz"))
    masks = [l.time_mask for l in ir.layers]
    assert masks[2] is None
    for m in masks[:2]:
        m = np.asarray(m, bool)
        assert abs(int((~m).sum()) - 0.5 * m.size) <= 1 and m.any(axis=1).all()
    e = rep["energy"]
    assert e["rho_t"] == pytest.approx(0.5, abs=0.02)
    assert e["relative_energy"] == pytest.approx((1 - e["rho_w"]) * (1 - e["rho_t"]), abs=2e-6)
    assert rep["accuracy"]["lava"] == rep["accuracy"]["emulator"]
    assert rep["accuracy"]["norse"] > 0.3  # 3x chance after 8 epochs of a 32-16 MLP (the test is the mechanism)
