"""Spatio-temporal DPAP (docs/dpap.md sec. 7): timestep importance, the (N, T) spike mask, the
shortened window, and what the exporters do with timestep masks; the two gates (sec. 7.4):
"hold" (threshold test off at a masked step: no spike, no reset) and "drop" (spike dropped after
the update, the neuron resets), alike in Norse, the emulator (both engines) and Lava."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from dpap_deploy.data import rate_encode
from dpap_deploy.errors import ExportValidationError, IRError, ModelError, UnsupportedLayerError
from dpap_deploy.export import get_target, lava_sim
from dpap_deploy.export.emulator import emulate
from dpap_deploy.export.quantize import quantize
from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR
from dpap_deploy.train.compact import compact, to_ir
from dpap_deploy.train.dpap import DPAPConfig, DPAPState, RuleConstants
from dpap_deploy.train.loop import TrainConfig, train
from dpap_deploy.train.models import SpikingCNN, SpikingMLP, model_from_config
from test_conv_export import _frames, _model as _cnn, events  # noqa: F401 (events: the module's fixture)
from test_lava import _network

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


@pytest.mark.parametrize("gate", ["drop", "hold"])
def test_shortened_window_and_gated_steps_in_lava_and_refused_elsewhere(digits, tmp_path, gate):
    torch.manual_seed(0)
    m = SpikingMLP([64, 24, 10], init_gain=6.0, time_gate=gate)
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
    assert [l.time_gate for l in ir.layers] == [gate, gate]
    for target in ("netx", "nir", "loihi2"):  # no per-neuron, per-step gate in these formats / on the chip
        with pytest.raises(UnsupportedLayerError, match=rf"target {target} cannot silence neurons at chosen time steps "
                                                        r"inside the T = 9 window.*fc1: 6 of 216 \(unit, time step\)"):
            get_target(target)(ir, str(tmp_path), spikes=x)
    # loihi-sim puts a SpikeGate after fc1 ("drop") or makes fc1 a GatedLIFReset ("hold"): Lava, both
    # emulator engines and Norse silence the same spikes
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


# -- the "hold" gate (docs/dpap.md sec. 7.4) ------------------------------------------------
def _two_neurons(gate, weights=(6.0, 3.0), input_current=False):
    """``1 -> 2`` SpikingMLP with Norse's default LIF (tau_syn_inv 200/s, tau_mem_inv 100/s, dt 1 ms,
    v_th 1) and the given weights; neuron 0 is silenced at step 1."""
    m = SpikingMLP([1, 2], init_gain=1.0, time_gate=gate, input_current=input_current)
    with torch.no_grad():
        m.layers[0].weight.copy_(torch.tensor(weights).view(2, 1))
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[0, 1] = False
    m.set_time_mask(0, mask)
    return m


def _run_by_hand(m, x):
    """Step the model's first population as its forward pass does (population, then the "drop" gate):
    spikes and membrane voltages per step."""
    state, z, v = None, [], []
    for t in range(x.shape[0]):
        s, state = m._population(0, m._synapses(0, x[t], m.masked_weights()[0]), state, t)
        s = m._gate(0, s, t)
        z.append(s.detach()[0].tolist())
        v.append((state if m.input_current else state.v).detach()[0].tolist())
    return z, v


def test_hold_keeps_the_charge_of_a_masked_step_and_fires_at_the_next_one_by_hand():
    # Norse's LIF step (lif_feed_forward_step), a = dt*tau_mem_inv = 0.1, b = dt*tau_syn_inv = 0.2:
    #   i' = i + I;  v' = v + a*(i' - v) = 0.9 v + 0.1 i';  i <- (1 - b) i' = 0.8 i';  spike = v' > 1, then v' = 0
    # input spikes at steps 0 and 1 only (I = w), weights w0 = 6 (neuron 0, silenced at step 1), w1 = 3
    x = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(4, 1, 1)
    # neuron 0: t0: i' = 6,               v = 0.6                        i = 4.8
    #           t1: i' = 4.8 + 6 = 10.8,  v = 0.54 + 1.08 = 1.62 (> 1)   i = 8.64
    #   hold:   t1 masked: no spike, v stays 1.62
    #           t2: i' = 8.64, v = 0.9*1.62 + 0.864 = 2.322 > 1: spike, v = 0;   i = 6.912
    #           t3: i' = 6.912, v = 0.6912
    #   drop:   t1: spike dropped, v reset to 0
    #           t2: v = 0.864;  t3: v = 0.9*0.864 + 0.6912 = 1.4688 > 1: spike, v = 0
    # neuron 1 (never masked): v = 0.3, 0.27 + 0.54 = 0.81, 0.729 + 0.432 = 1.161 (spike, 0), 0.3456
    hold, drop = _two_neurons("hold"), _two_neurons("drop")
    z, v = _run_by_hand(hold, x)
    assert z == [[0, 0], [0, 0], [1, 1], [0, 0]]
    torch.testing.assert_close(torch.tensor(v), torch.tensor([[0.6, 0.3], [1.62, 0.81], [0.0, 0.0], [0.6912, 0.3456]]))
    z, v = _run_by_hand(drop, x)
    assert z == [[0, 0], [0, 0], [0, 1], [1, 0]]
    torch.testing.assert_close(torch.tensor(v), torch.tensor([[0.6, 0.3], [0.0, 0.81], [0.864, 0.0], [0.0, 0.3456]]))
    # the forward pass gives the same spikes
    assert hold(x)[1][0][1][:, 0].tolist() == [[0, 0], [0, 0], [1, 1], [0, 0]]
    assert drop(x)[1][0][1][:, 0].tolist() == [[0, 0], [0, 0], [0, 1], [1, 0]]
    # without the mask neuron 0 fires at step 1 (v = 1.62) and again at step 3 (0.864, then 1.4688)
    plain = _two_neurons("hold")
    plain.set_time_mask(0, torch.ones(2, 4, dtype=torch.bool))
    assert plain(x)[1][0][1][:, 0, 0].tolist() == [0, 1, 0, 1]


def test_hold_on_the_current_encoded_first_layer_by_hand():
    # lif_current_encoder: v' = v + 0.1*(g*W x - v), g = tau_syn/dt = 5; W x = 1: drive 5, v' = 0.9 v + 0.5
    # v = 0.5, 0.95, 1.355 (> 1 at step 2, masked for neuron 0 at step 1 only: neuron 1 below at step 1)
    m = _two_neurons("hold", weights=(1.0, 0.5), input_current=True)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[0, 2] = False
    m.set_time_mask(0, mask)
    x = torch.ones(4, 1, 1)
    z, v = _run_by_hand(m, x)
    # neuron 0, hold: t2 masked, v stays 1.355; t3: 0.9*1.355 + 0.5 = 1.7195 > 1: spike
    # neuron 1 (drive 2.5): v = 0.25, 0.475, 0.6775, 0.85975: never fires
    assert z == [[0, 0], [0, 0], [0, 0], [1, 0]]
    torch.testing.assert_close(torch.tensor(v), torch.tensor([[0.5, 0.25], [0.95, 0.475], [1.355, 0.6775],
                                                              [0.0, 0.85975]]))
    drop = _two_neurons("drop", weights=(1.0, 0.5), input_current=True)
    drop.set_time_mask(0, mask)
    z, v = _run_by_hand(drop, x)  # drop: t2 resets to 0 without a spike; t3: v = 0.5
    assert z == [[0, 0], [0, 0], [0, 0], [0, 0]]
    torch.testing.assert_close(torch.tensor(v)[:, 0], torch.tensor([0.5, 0.95, 0.0, 0.5]))


def test_training_through_hold_gates_has_finite_gradients():
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(3)
    mlp = SpikingMLP([64, 20, 10], init_gain=8.0)
    assert mlp.time_gate == "hold"  # the default of a new model
    mlp.set_time_mask(0, torch.rand(20, 8, generator=g) < 0.5)
    x = (torch.rand(8, 16, 64, generator=g) < 0.3).float()
    cnn = SpikingCNN((2, 8, 8), (3,), (6,), 4, init_gain=16.0)
    cnn.set_time_mask(0, torch.rand(3, 8, generator=g) < 0.5)
    for m, inp in ((mlp, x), (cnn, (torch.rand(8, 4, 2, 8, 8, generator=g) < 0.5).float())):
        out, rec = m(inp)
        torch.nn.functional.cross_entropy(out, torch.zeros(out.shape[0], dtype=torch.long)).backward()
        grads = [l.weight.grad for l in m.layers]
        assert all(torch.isfinite(gr).all() for gr in grads)
        assert all(float(gr.abs().sum()) > 0 for gr in grads)
        silent = ~m.time_mask(0)[:, : rec[0][1].shape[0]].T  # (T, units)
        spikes = rec[0][1] if rec[0][1].dim() == 3 else rec[0][1].sum((3, 4))
        assert float(spikes.detach().permute(0, 2, 1)[silent].sum()) == 0.0
    # "circ" has no finite surrogate gradient at v_th = +inf: refused, naming the layer
    from dpap_deploy.train.models import LIFConfig

    circ = SpikingMLP([4, 3, 2], lif=LIFConfig(surrogate="circ"))
    with pytest.raises(ModelError, match=r"layer fc1: .*'circ'"):
        circ.set_time_mask(0, torch.ones(3, 4, dtype=torch.bool))


def _hand_ir(gate, T=6):
    """One input, one neuron, by hand in Lava's integers: weight 100 (exponent 0), du = 4095 (u
    decays fully: u = 100 << 6 = 6400 each step with an input spike), dv = 1024 (v keeps
    trunc(v * 3072/4096)), vth = 300 (fires when v > 300 << 6 = 19200); silenced at step 4."""
    mask = np.ones((1, T), bool)
    mask[0, 4] = False
    layer = FCLayer("fc1", np.ones((1, 1)), np.ones((1, 1), bool), LIFNeurons(5e-3, 10e-3, 1.0), (1, 1),
                    time_mask=mask, time_gate=gate)
    ir = quantize(NetworkIR("hand", 1, T, 1e-3, [layer]))
    f = replace(ir.layers[0].fixed, weight=np.array([[100]], np.int32), weight_exp=0, du=4095, dv=1024, vth=300)
    return ir.with_layers([replace(ir.layers[0], fixed=f)])


def test_emulator_hold_on_a_hand_computed_integer_case():
    # v = trunc(0.75 v) + 6400: 6400, 4800 + 6400 = 11200, 8400 + 6400 = 14800, 11100 + 6400 = 17500,
    #     13125 + 6400 = 19525 (> 19200 at step 4, which is masked)
    # hold: no spike, no reset at step 4; step 5: trunc(0.75 * 19525) = 14643, + 6400 = 21043 > 19200: spike
    # drop: reset at step 4 without a spike; step 5: v = 6400, no spike
    x = np.ones((6, 1, 1), np.uint8)
    expected = {"hold": [0, 0, 0, 0, 0, 1], "drop": [0, 0, 0, 0, 0, 0]}
    for gate, want in expected.items():
        ir = _hand_ir(gate)
        for engine in ("numba", "torch"):
            counts, rasters = emulate(ir, x, record=True, engine=engine)
            assert rasters[0][:, 0, 0].tolist() == want, (gate, engine)
        _, info = lava_sim.run(ir, x)  # and Lava's GatedLIFReset / SpikeGate agree
        assert info["output_spikes"][:, 0, 0].tolist() == want, gate
    plain = _hand_ir("hold").layers[0]
    ir = _hand_ir("hold").with_layers([replace(plain, time_mask=None)])
    assert emulate(ir, x, record=True)[1][0][:, 0, 0].tolist() == [0, 0, 0, 0, 1, 0]  # unmasked: fires at step 4


def _random_masks(ir, rng, keep=0.7):
    """Every layer of ``ir`` with a random ``(n_out, T)`` timestep mask and the "hold" gate."""
    return ir.with_layers([replace(l, time_mask=rng.random((l.n_out, ir.time_steps)) < keep, time_gate="hold")
                           for l in ir.layers])


def _lava_equals_emulator(ir, x):
    """Lava's fixed-point run (every population recorded) equals both emulator engines spike for spike."""
    counts, info = lava_sim.run(ir, x, record_hidden=True)
    for engine in ("numba", "torch"):
        c, rasters = emulate(ir, x, record=True, engine=engine, batch_size=5)
        np.testing.assert_array_equal(rasters[-1], info["output_spikes"])
        for mine, lavas in zip(rasters[:-1], info["hidden_spikes"]):
            np.testing.assert_array_equal(mine, lavas)
        np.testing.assert_array_equal(c, counts)
    return counts, info


def test_lava_equals_the_emulator_with_hold_gates_on_an_mlp(digits):
    ir = _random_masks(_network([64, 24, 16, 10], T=12, gains=[12.0, 10.0, 10.0], density=0.5, seed=5),
                       np.random.default_rng(8))
    assert [l.time_gate for l in ir.layers] == ["hold"] * 3 and ir.silenced_inside_window()
    x = rate_encode(digits.x_test[:16], 12, seed=4)
    counts, info = _lava_equals_emulator(ir, x)
    assert counts.sum() > 20 and all(h.sum() > 0 for h in info["hidden_spikes"]), "the test needs spikes"
    # masked (neuron, step) pairs never spike
    for r, l in zip(info["hidden_spikes"] + [info["output_spikes"]], ir.layers):
        assert not (r.astype(bool) & ~l.time_mask.T[:, None, :]).any()
    # hold is not drop: the same masks as "drop" give other spikes (so Lava above really held)
    drop = ir.with_layers([replace(l, time_gate="drop") for l in ir.layers])
    _, rd = emulate(drop, x, record=True)
    _, rh = emulate(ir, x, record=True)
    assert any(not np.array_equal(a, b) for a, b in zip(rd, rh))
    # samples stay independent: LIFReset's reset_interval / reset_offset clear a held v at each sample's start
    alone, _ = lava_sim.run(ir, x[:, 9:10])
    np.testing.assert_array_equal(alone, counts[9:10])


def test_lava_equals_the_emulator_and_norse_with_hold_gates_on_a_conv_snn(events):  # noqa: F811
    m = _cnn(events)
    assert m.time_gate == "hold"
    x = _frames(events, 16)
    T = x.shape[0]
    g = torch.Generator().manual_seed(6)
    for l in (0, 1, 2):  # conv1, conv2 (channels, all pixels) and fc1 (neurons): a fifth of the pairs silenced
        m.set_time_mask(l, torch.rand(m.widths()[l], T, generator=g) < 0.8)
    out, rec = m(torch.from_numpy(x))
    ir = to_ir(m, T)
    assert [l.time_gate for l in ir.layers] == ["hold"] * 4 and ir.silenced_inside_window()
    counts, _ = lava_sim.run(ir, x, precision="float")  # GatedLIFReset's float model: Norse's spikes
    np.testing.assert_array_equal(counts, out.detach().numpy())
    qir = quantize(ir)
    counts, info = _lava_equals_emulator(qir, x)
    assert counts.sum() >= 20 and all(h.sum() > 0 for h in info["hidden_spikes"]), "the test needs spikes"
    _, rd = emulate(qir.with_layers([replace(l, time_gate="drop") for l in qir.layers]), x, record=True)
    _, rh = emulate(qir, x, record=True)
    assert any(not np.array_equal(a, b) for a, b in zip(rd, rh))


def _strip_time_gate(path, value=None):
    """Rewrite an IR file's header as this code wrote it before ``time_gate`` existed (``value`` None),
    or with ``time_gate = value``."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(bytes(arrays["header"]).decode())
    assert header["format"] == "dpap-deploy-ir/4"  # this version writes /4; rewritten as /2 below
    if value is None:
        header["format"] = "dpap-deploy-ir/2"
    for e in header["nodes"]:
        e.pop("time_gate", None)
        if value is not None and "dense_shape" in e:
            e["time_gate"] = value
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez_compressed(path, **arrays)


def test_an_old_ir_file_without_time_gate_loads_as_drop_and_simulates_as_before(digits, tmp_path):
    rng = np.random.default_rng(2)
    base = _network([64, 20, 10], T=10, gains=[12.0, 10.0], density=0.6, seed=3)
    masks = [rng.random((l.n_out, 10)) < 0.7 for l in base.layers]
    old = base.with_layers([replace(l, time_mask=m) for l, m in zip(base.layers, masks)])  # constructed: "drop"
    assert [l.time_gate for l in old.layers] == ["drop", "drop"]
    path = str(tmp_path / "old.npz")
    old.save(path)
    _strip_time_gate(path)
    with np.load(path) as f:
        assert "time_gate" not in bytes(f["header"]).decode()
    back = NetworkIR.load(path)
    assert [l.time_gate for l in back.layers] == ["drop", "drop"]
    x = rate_encode(digits.x_test[:12], 10, seed=6)
    counts, info = _lava_equals_emulator(back, x)  # Lava with SpikeGates, as before
    before, rasters = emulate(old, x, record=True)
    np.testing.assert_array_equal(counts, before)
    assert counts.sum() > 10
    held = emulate(old.with_layers([replace(l, time_gate="hold") for l in old.layers]), x, record=True)[1]
    assert any(not np.array_equal(a, b) for a, b in zip(held, rasters)), "hold and drop must differ here"
    # a new file keeps its gate
    hold = old.with_layers([replace(l, time_gate="hold") for l in old.layers])
    hold.save(path)
    assert [l.time_gate for l in NetworkIR.load(path).layers] == ["hold", "hold"]
    # and a model configuration from before time_gate rebuilds a "drop" model
    cfg = SpikingMLP([4, 3, 2]).config()
    assert cfg["time_gate"] == "hold" and model_from_config(cfg).time_gate == "hold"
    del cfg["time_gate"]
    assert model_from_config(cfg).time_gate == "drop"


def test_a_bad_time_gate_is_refused_naming_the_layer(tmp_path):
    n = LIFNeurons(5e-3, 10e-3, 1.0)
    with pytest.raises(IRError, match=r"layer 'fc7': time_gate 'defer' is not one of \('hold', 'drop'\)"):
        FCLayer("fc7", np.ones((2, 3)), np.ones((2, 3), bool), n, (2, 3), time_gate="defer")
    ir = _network([6, 4, 3], T=5, gains=[5.0, 5.0], density=1.0)
    path = str(tmp_path / "bad.npz")
    ir.save(path)
    _strip_time_gate(path, "later")
    with pytest.raises(IRError, match=r"layer 'fc1': time_gate 'later'"):
        NetworkIR.load(path)
    with pytest.raises(ModelError, match=r"time_gate 'sometimes'"):
        SpikingMLP([4, 3, 2], time_gate="sometimes")
    bad = ir.with_layers([replace(l, time_mask=np.tile(np.arange(5) != 2, (l.n_out, 1))) for l in ir.layers])
    bad.layers[1].time_gate = "Hold"  # set after construction: the emulator and Lava still refuse it
    x = np.zeros((5, 2, 6), np.uint8)
    for engine in ("numba", "torch"):
        with pytest.raises(ExportValidationError, match=r'layer "fc2": time_gate \'Hold\''):
            emulate(bad, x, engine=engine)
    with pytest.raises(ExportValidationError, match=r'layer "fc2": time_gate \'Hold\''):
        lava_sim.build(bad, lava_sim.input_schedule(x, 2))
