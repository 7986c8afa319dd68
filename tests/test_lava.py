"""The Lava export against an independent numpy integer simulation (tests/reference_sim.py)."""
from dataclasses import replace

import numpy as np
import pytest

from dpap_deploy.data import rate_encode
from dpap_deploy.errors import ExportValidationError
from dpap_deploy.export import lava_sim
from dpap_deploy.export.quantize import quantize
from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR
from reference_sim import simulate


def _network(sizes, T, gains, density, seed=0):
    rng = np.random.default_rng(seed)
    neurons = LIFNeurons(tau_syn_s=5e-3, tau_mem_s=10e-3, v_th=1.0)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.normal(0.3 / np.sqrt(a), gains[i] / np.sqrt(a), (b, a))
        m = rng.random((b, a)) < density
        layers.append(FCLayer(f"fc{i + 1}", w * m, m, neurons, (b, a)))
    return quantize(NetworkIR("test", sizes[0], T, 1e-3, layers))


def _reference(ir, x):
    return simulate([dict(w=l.fixed.weight, exp=l.fixed.weight_exp, du=l.fixed.du, dv=l.fixed.dv,
                          vth=l.fixed.vth) for l in ir.layers], x)


def test_lava_matches_numpy_integer_simulation_on_digits(digits):
    ir = _network([64, 24, 16, 10], T=12, gains=[12.0, 10.0, 10.0], density=0.5)
    x = rate_encode(digits.x_test[:12], 12, seed=1)
    counts, info = lava_sim.run(ir, x)
    ref = _reference(ir, x)
    assert ref.sum() > 20 and (ref.sum(1) > 0).sum() >= 6, "test needs output spikes in most samples"
    np.testing.assert_array_equal(counts, ref)
    # samples are independent: LIFReset clears u, v when each sample's first input arrives
    counts_alone, _ = lava_sim.run(ir, x[:, 5:6])
    np.testing.assert_array_equal(counts_alone, ref[5:6])
    # the run is T*N + L steps, and synapses are counted from the Sparse processes
    assert info["steps"] == 12 * 12 + 3
    assert info["synapses_per_layer"] == {l.name: int((l.fixed.weight != 0).sum()) for l in ir.layers}
    assert info["synapses_per_layer"]["fc1"] < 64 * 24


def test_lava_matches_with_weight_exponents(digits):
    ir = _network([64, 20, 10], T=10, gains=[12.0, 10.0], density=0.6, seed=3)
    # force a right shift (negative exponent) on fc1 and a left shift on fc2
    l1, l2 = ir.layers
    f1 = replace(l1.fixed, weight_exp=-1, vth=l1.fixed.vth // 2)
    f2 = replace(l2.fixed, weight=l2.fixed.weight // 4 * 2, weight_exp=1)
    ir = ir.with_layers([replace(l1, fixed=f1), replace(l2, fixed=f2)])
    x = rate_encode(digits.x_test[:8], 10, seed=2)
    counts, _ = lava_sim.run(ir, x)
    ref = _reference(ir, x)
    assert ref.sum() > 0
    np.testing.assert_array_equal(counts, ref)


def test_input_shape_mismatch_is_a_clear_error():
    ir = _network([64, 10], T=8, gains=[5.0], density=1.0)
    with pytest.raises(ExportValidationError, match="T=4, F=64; network 'test' expects T=8"):
        lava_sim.run(ir, np.zeros((4, 2, 64), np.float32))


def test_schedule_and_counts_layout():
    x = np.zeros((3, 2, 4), np.float32)
    x[1, 0, 2] = 1
    x[2, 1, 3] = 1
    data = lava_sim.input_schedule(x, n_layers=2)
    assert data.shape == (4, 2 * 3 + 2)
    assert data[2, 1] == 1 and data[3, 3 + 2] == 1 and data.sum() == 2
    raster = np.zeros((2, 8), np.int32)
    raster[0, 2] = raster[0, 4] = 1   # sample 0 (columns 2..4)
    raster[1, 7] = 1                  # sample 1 (columns 5..7)
    raster[1, 1] = 1                  # before the first window: ignored
    np.testing.assert_array_equal(lava_sim.output_counts(raster, T=3, N=2, n_layers=2), [[2, 0], [0, 1]])


def test_lava_float_reproduces_norse_spike_for_spike(digits):
    """Lava's floating-point LIF with Norse's parameters gives Norse's output spikes: the
    wiring, the one-step delay per Sparse layer and the staggered resets are right."""
    import torch

    from dpap_deploy.train.compact import to_ir
    from dpap_deploy.train.models import SpikingMLP

    torch.manual_seed(4)
    model = SpikingMLP([64, 30, 20, 10], init_gain=6.0).double()
    with torch.no_grad():
        model.masks[0].copy_(torch.rand(model.masks[0].shape) < 0.6)
        model.apply_masks()
    T = 16
    x = rate_encode(digits.x_test[:25], T, seed=7)
    counts_norse, _ = model(torch.from_numpy(x).double())
    counts_norse = counts_norse.detach().numpy().astype(np.int64)
    assert counts_norse.sum() > 50 and (counts_norse.sum(1) > 0).sum() >= 20, "test needs an active network"
    ir = to_ir(model, T)
    counts_lava, _ = lava_sim.run(ir, x, precision="float")
    np.testing.assert_array_equal(counts_lava, counts_norse)
