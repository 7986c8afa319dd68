"""The torch fixed-point emulator against Lava itself and the numpy reference simulation."""
import numpy as np
import pytest

from dpap_deploy.data import rate_encode
from dpap_deploy.errors import ExportValidationError
from dpap_deploy.export import lava_sim
from dpap_deploy.export.emulator import emulate
from test_lava import _network, _reference


@pytest.mark.parametrize("density", [1.0, 0.3])  # dense and pruned
def test_emulator_equals_lava_spike_for_spike(digits, density):
    ir = _network([64, 24, 16, 10], T=12, gains=[12.0, 10.0, 10.0], density=density, seed=5)
    x = rate_encode(digits.x_test[:24], 12, seed=4)
    counts, rasters = emulate(ir, x, batch_size=7, record=True)  # batches that do not divide N
    lava_counts, info = lava_sim.run(ir, x)
    assert lava_counts.sum() > 20, "the test needs output spikes"
    np.testing.assert_array_equal(rasters[-1], info["output_spikes"])  # every spike, every step
    np.testing.assert_array_equal(counts, lava_counts)
    np.testing.assert_array_equal(counts, _reference(ir, x))


def test_emulator_rejects_unquantised_networks_and_wrong_inputs(digits):
    ir = _network([64, 8, 10], T=6, gains=[8.0, 8.0], density=1.0)
    with pytest.raises(ExportValidationError, match="expects T=6, F=64"):
        emulate(ir, np.zeros((5, 2, 64)))
    from dataclasses import replace

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
