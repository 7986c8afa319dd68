"""Spatio-temporal DPAP (docs/dpap.md sec. 7): timestep importance, the (N, T) spike mask, the
shortened window, and what the exporters do with timestep masks."""
import numpy as np
import pytest
import torch

from dpap_deploy.data import rate_encode
from dpap_deploy.errors import UnsupportedLayerError
from dpap_deploy.export import get_target, lava_sim
from dpap_deploy.export.emulator import emulate
from dpap_deploy.export.quantize import quantize
from dpap_deploy.train.compact import compact, to_ir
from dpap_deploy.train.dpap import DPAPConfig, DPAPState, RuleConstants
from dpap_deploy.train.loop import TrainConfig, train
from dpap_deploy.train.models import SpikingMLP

TIME_RULE = RuleConstants(1.5, 2.0, 13.0)


def test_timestep_importance_on_a_hand_computed_case():
    # pre (T=3, B=1, F=2): summed 1, 1, 2 -> trace x = 1, 0.5 + 1 = 1.5, 0.75 + 2 = 2.75
    pre = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])
    post = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 1.0]]])
    state = DPAPState([2, 2, 1], DPAPConfig(timestep=TIME_RULE, delta=0.5))
    state.observe([(pre, post), (post, torch.zeros(3, 1, 1))])
    expected = torch.tensor([[1.0, 1.5, 0.0], [0.0, 1.5, 2.75]], dtype=torch.float64)
    torch.testing.assert_close(state.Time[0], expected)
    state.observe([(pre, post), (post, torch.zeros(3, 1, 1))])  # accumulates over the epoch's batches
    torch.testing.assert_close(state.Time[0], 2 * expected)
    assert 1 not in state.Time  # the output layer is not pruned

    # the survival rule (docs/dpap.md sec. 5) on Time: R = 0.999*1 + d, d = 2*unit(score) - 1.5 (+2 if > 0);
    # unit() over [min, P75]: the two zero-importance pairs get d = -1.5 and go, the rest stay
    state = DPAPState([2, 2, 1], DPAPConfig(timestep=TIME_RULE, e0=0, r_init=1.0, prune_neurons=False,
                                            prune_synapses=False))
    state.observe([(pre, post), (post, torch.zeros(3, 1, 1))])
    state.end_epoch(0)
    assert state.time_alive[0].tolist() == [[True, True, False], [False, True, True]]
    assert float(state.Time[0].abs().sum()) == 0.0  # reset after the pruning step (paper eq. 6)


def _model(seed=0):
    torch.manual_seed(seed)
    return SpikingMLP([64, 24, 10], init_gain=3.0)


def test_a_masked_time_step_produces_no_spike(digits):
    x = torch.from_numpy(rate_encode(digits.x_test[:40], 8, seed=2))
    m = _model()
    _, rec = m(x)
    fired = rec[0][1][3]  # layer fc1's spikes at t = 3, (B, 24)
    j = int(fired.sum(0).argmax())
    assert fired[:, j].sum() > 0, "the test needs a neuron that spikes at t = 3"
    mask = torch.ones(24, 8, dtype=torch.bool)
    mask[j, 3] = False
    m.set_time_mask(0, mask)
    _, rec2 = m(x)
    assert rec2[0][1][3][:, j].sum() == 0
    # the other fc1 neurons do not depend on neuron j: their spikes are unchanged
    others = [i for i in range(24) if i != j]
    assert torch.equal(rec2[0][1][:, :, others], rec[0][1][:, :, others])
    # and the mask is part of the model's state
    m2 = _model(1)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.time_mask(0), mask)


def test_steps_pruned_for_every_neuron_at_the_end_shorten_the_window(digits):
    x = torch.from_numpy(rate_encode(digits.x_test[:30], 8, seed=3))
    m = _model()
    plain = _model()
    mask = torch.ones(24, 8, dtype=torch.bool)
    mask[:, 5:] = False  # every fc1 neuron silent from step 5 on
    mask[2, 1] = True
    m.set_time_mask(0, mask)
    assert m.active_steps(8) == 5
    counts, rec = m(x)
    assert rec[0][1].shape[0] == 5
    torch.testing.assert_close(counts, plain(x[:5])[0])
    # one neuron left at step 6 keeps the window at 7
    mask[0, 6] = True
    m.set_time_mask(0, mask)
    assert m.active_steps(8) == 7


def test_shortened_window_and_gated_steps_in_lava_and_refused_elsewhere(digits, tmp_path):
    torch.manual_seed(0)
    m = SpikingMLP([64, 24, 10], init_gain=6.0)
    mask = torch.ones(24, 12, dtype=torch.bool)
    mask[:, 9:] = False
    m.set_time_mask(0, mask)
    ir = quantize(to_ir(m, 12))
    assert ir.time_steps == 9 and ir.metadata["time_steps_trained"] == 12
    x = rate_encode(digits.x_test[:20], 12, seed=5)[:9]
    counts, info = lava_sim.run(ir, x)
    assert info["steps"] == 9 * 20 + 2  # nine steps per sample, not twelve
    assert counts.sum() > 10, "the test needs output spikes"
    np.testing.assert_array_equal(emulate(ir, x)[0], counts)

    # silence six (step, neuron) pairs of fc1 where it does spike, inside the window
    _, rasters = emulate(ir, x, record=True)
    pairs = np.argwhere(rasters[0].sum(1) > 3)[:6]
    assert len(pairs) == 6
    for t, n in pairs:
        mask[n, t] = False
    m.set_time_mask(0, mask)
    ir = quantize(to_ir(m, 12))
    for target in ("netx", "nir", "loihi2"):  # no per-neuron, per-step gate in these formats / on the chip
        with pytest.raises(UnsupportedLayerError, match=rf"target {target} cannot silence neurons at chosen time steps "
                                                        r"inside the T = 9 window.*fc1: 6 of 216 \(unit, time step\)"):
            get_target(target)(ir, str(tmp_path), spikes=x)
    # loihi-sim puts a SpikeGate after fc1: Lava, both emulator engines and Norse drop the same spikes
    counts, info = lava_sim.run(ir, x, record_hidden=True)
    hidden = info["hidden_spikes"][0]
    assert all(hidden[t, :, n].sum() == 0 for t, n in pairs)
    for engine in ("numba", "torch"):
        emu, rasters = emulate(ir, x, record=True, engine=engine)
        np.testing.assert_array_equal(rasters[0], hidden)
        np.testing.assert_array_equal(rasters[1], info["output_spikes"])
    _, rec = m(torch.from_numpy(x))
    assert all(float(rec[0][1][t, :, n].sum()) == 0.0 for t, n in pairs)


def test_spatio_temporal_dpap_prunes_time_steps_in_training_and_keeps_them_through_compaction(digits, tmp_path):
    cfg = TrainConfig(epochs=4, time_steps=8, hidden=(32, 16), lr=1e-2, seed=2, batch_size=64)
    dpap = DPAPConfig(e0=1, r_init=1.0, fc_neuron=RuleConstants(1.0, 2.0, 13.0), fc_synapse=RuleConstants(1.0, 2.0, 13.0),
                      timestep=RuleConstants(1.5, 2.0, 13.0))
    res = train(digits, cfg, dpap, progress=False, checkpoint=str(tmp_path / "c.safetensors"))
    tm = [res.model.time_mask(l) for l in range(2)]
    assert all(t is not None for t in tm) and res.model.time_mask(2) is None
    assert sum(int((~t).sum()) for t in tm) > 0, "timestep pruning removed nothing"
    # the compacted model's masks are the state's masks of the surviving neurons
    assert [t.shape[0] for t in tm] == res.model.widths()[:2]
    # the state round-trips through the checkpoint file training wrote (its last epoch's state)
    from dpap_deploy.train.checkpoint import load_checkpoint

    back = DPAPState.from_state_dict(load_checkpoint(str(tmp_path / "c.safetensors"))["dpap_state"])
    assert res.state.time_alive and back.time_alive.keys() == res.state.time_alive.keys()
    for l in res.state.time_alive:
        assert torch.equal(back.time_alive[l], res.state.time_alive[l])
    # spikes of the trained model obey the masks
    x = torch.from_numpy(rate_encode(digits.x_test[:50], 8, seed=7))
    _, rec = res.model(x)
    for l in range(2):
        steps = rec[l][1].shape[0]
        silenced = ~tm[l][:, :steps].T  # (T, N)
        assert float(rec[l][1][:, :, :][silenced.unsqueeze(1).expand_as(rec[l][1])].sum()) == 0.0
    small, _ = compact(res.model)
    assert all(torch.equal(small.time_mask(l), tm[l]) for l in range(2))
