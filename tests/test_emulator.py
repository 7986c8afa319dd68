"""The fixed-point emulator (both engines) against Lava itself and the numpy reference simulation."""
from dataclasses import replace

import numpy as np
import pytest

from dpap_deploy.data import rate_encode
from dpap_deploy.errors import ExportValidationError
from dpap_deploy.export import lava_sim
from dpap_deploy.export.emulator import _kernel_arrays, emulate
from dpap_deploy.export.quantize import quantize
from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR
from reference_sim import simulate
from test_lava import _network, _reference


@pytest.mark.parametrize("density", [1.0, 0.3])  # dense and pruned
def test_emulator_equals_lava_spike_for_spike(digits, density):
    ir = _network([64, 24, 16, 10], T=12, gains=[12.0, 10.0, 10.0], density=density, seed=5)
    x = rate_encode(digits.x_test[:24], 12, seed=4)
    lava_counts, info = lava_sim.run(ir, x, record_hidden=True)
    assert lava_counts.sum() > 20, "the test needs output spikes"
    for engine in ("numba", "torch"):
        counts, rasters = emulate(ir, x, batch_size=7, record=True, engine=engine)  # batches that do not divide N
        np.testing.assert_array_equal(rasters[-1], info["output_spikes"])  # every spike, every step
        for mine, lavas in zip(rasters[:-1], info["hidden_spikes"]):  # and every hidden population
            assert lavas.sum() > 0
            np.testing.assert_array_equal(mine, lavas)
        np.testing.assert_array_equal(counts, lava_counts)
    np.testing.assert_array_equal(counts, _reference(ir, x))


def _every_path_network():
    """fc1: 200 inputs of weight 254 (sums beyond int16: int32 rows) with almost no current
    decay, so ``u`` wraps and ``v`` clips; fc2: 8 % dense (CSR rows), weight exponent -1 (floor
    shift); fc3: dense, small sums (int16 rows), exponent +1."""
    rng = np.random.default_rng(7)
    n = LIFNeurons(tau_syn_s=5e-3, tau_mem_s=10e-3, v_th=1.0)
    ls = [FCLayer("fc1", np.ones((16, 200)), np.ones((16, 200), bool), n, (16, 200)),
          FCLayer("fc2", rng.normal(0, 1, (40, 16)), rng.random((40, 16)) < 0.08, n, (40, 16)),
          FCLayer("fc3", rng.normal(0.1, 1, (10, 40)), rng.random((10, 40)) < 0.6, n, (10, 40))]
    ir = quantize(NetworkIR("paths", 200, 20, 1e-3, ls))
    f1 = replace(ir.layers[0].fixed, weight=np.where(rng.random((16, 200)) < 0.9, 254, -254), du=0, dv=40,
                 vth=100_000)
    w2 = ir.layers[1].fixed.weight
    f2 = replace(ir.layers[1].fixed, weight=np.where(w2 != 0, np.sign(w2) * 200, 0), weight_exp=-1, vth=1000)
    f3 = replace(ir.layers[2].fixed, weight_exp=1)
    return ir.with_layers([replace(l, fixed=f) for l, f in zip(ir.layers, (f1, f2, f3))])


def test_both_engines_equal_lava_on_every_kernel_path():
    ir = _every_path_network()
    assert list(_kernel_arrays(ir)[1]) == [1, 2, 0]  # int32 rows, CSR rows, int16 rows
    x = (np.random.default_rng(3).random((20, 6, 200)) < 0.3).astype(np.float32)
    events = {}
    ref = simulate([dict(w=l.masked_weight(fixed=True), exp=l.fixed.weight_exp, du=l.fixed.du, dv=l.fixed.dv,
                         vth=l.fixed.vth) for l in ir.layers], x, events)
    assert events["u_wraps"] > 0 and events["v_clips"] > 0, events
    lava_counts, info = lava_sim.run(ir, x)
    assert lava_counts.sum() > 10, "the test needs output spikes"
    np.testing.assert_array_equal(lava_counts, ref)
    numba_counts, numba_rasters = emulate(ir, x, record=True, engine="numba")
    torch_counts, torch_rasters = emulate(ir, x, record=True, engine="torch")
    np.testing.assert_array_equal(numba_rasters[-1], info["output_spikes"])
    for a, b in zip(numba_rasters, torch_rasters):  # every population, every step
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(numba_counts, lava_counts)
    np.testing.assert_array_equal(torch_counts, lava_counts)


def test_emulator_rejects_unquantised_networks_and_wrong_inputs(digits):
    ir = _network([64, 8, 10], T=6, gains=[8.0, 8.0], density=1.0)
    with pytest.raises(ExportValidationError, match="expects T=6, F=64"):
        emulate(ir, np.zeros((5, 2, 64)))
    for bad in (np.full((6, 2, 64), 0.5), np.full((6, 2, 64), -1.0), np.full((6, 2, 64), 2, np.uint8)):
        with pytest.raises(ExportValidationError, match="must be 0 or 1"):
            emulate(ir, bad)
    with pytest.raises(ExportValidationError, match="unknown emulator engine 'cuda'"):
        emulate(ir, np.zeros((6, 2, 64)), engine="cuda")
    raw = ir.with_layers([replace(l, fixed=None) for l in ir.layers])
    with pytest.raises(ExportValidationError, match='layer "fc1" is not quantised'):
        emulate(raw, np.zeros((6, 2, 64)))


def test_training_reports_the_deployed_fixed_point_accuracy_each_epoch(digits):
    from dpap_deploy.export.quantize import quantize
    from dpap_deploy.train.compact import to_ir
    from dpap_deploy.train.loop import TEST_ENCODING_SEED_OFFSET, TrainConfig, train

    cfg = TrainConfig(epochs=3, time_steps=12, hidden=(48, 24), lr=1e-2, seed=1)
    res = train(digits, cfg, progress=False)
    last = res.history[-1]
    assert all("fixed_point_accuracy" in h for h in res.history)
    # the figure is what Lava gives for the exported network on the same test encoding
    x = rate_encode(digits.x_test, 12, seed=1 + TEST_ENCODING_SEED_OFFSET)
    lava_counts, _ = lava_sim.run(quantize(to_ir(res.model, 12)), x[:, :40])
    emu_counts, _ = emulate(quantize(to_ir(res.model, 12)), x)
    np.testing.assert_array_equal(emu_counts[:40], lava_counts)
    assert last["fixed_point_accuracy"] == float((emu_counts.argmax(1) == digits.y_test).mean())
    assert abs(last["fixed_point_accuracy"] - last["test_accuracy"]) < 0.1
