"""Energy accounting: synaptic operations and the paper's relative energy, on hand-computed cases."""
import numpy as np
import pytest

from dpap_deploy.energy import energy_section, fan_out, synops_per_sample, timestep_sparsity
from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR

N = LIFNeurons(5e-3, 1e-2, 1.0)


def _ir(time_mask=None, T=4, trained=None):
    m1 = np.array([[1, 1, 0], [0, 1, 1]], bool)      # input 0 -> 1 synapse, 1 -> 2, 2 -> 1
    m2 = np.array([[1, 0], [1, 1], [0, 1]], bool)      # fc1 neuron 0 -> 2, neuron 1 -> 2
    meta = {"time_steps_trained": trained} if trained else {}
    return NetworkIR("t", 3, T, 1e-3, [FCLayer("fc1", m1 * 1.0, m1, N, (4, 3), time_mask=time_mask),
                                       FCLayer("fc2", m2 * 1.0, m2, N, (3, 4))], metadata=meta)


def test_synops_count_spikes_times_surviving_fan_out():
    ir = _ir()
    assert [f.tolist() for f in fan_out(ir)] == [[1, 2, 1], [2, 2]]
    x = np.zeros((4, 2, 3), np.uint8)
    x[0, 0] = [1, 1, 1]       # sample 0: 1 + 2 + 1 = 4
    x[1, 1, 1] = 1            # sample 1: 2
    h = np.zeros((4, 2, 2), np.uint8)
    h[2, 0, 0] = 1            # sample 0: 2
    h[:, 1, 1] = 1            # sample 1: 4 spikes x 2 = 8
    assert synops_per_sample(ir, [x, h]) == pytest.approx((4 + 2 + 2 + 8) / 2)
    # unpruned: fc1 reaches 4 neurons, fc2 reaches 3
    assert synops_per_sample(ir, [x, h], dense=True) == pytest.approx((3 * 4 + 4 + 3 + 4 * 3) / 2)
    with pytest.raises(ValueError, match="3 presynaptic neurons for a layer with 2 inputs"):
        synops_per_sample(ir, [x, x])


def test_timestep_sparsity_and_relative_energy():
    assert timestep_sparsity(_ir()) == 0.0
    tm = np.ones((2, 4), bool)
    tm[0, 1] = False
    assert timestep_sparsity(_ir(tm)) == pytest.approx(1 / 8)
    # a window cut from 6 trained steps to 4: the two cut steps are silent for both neurons
    assert timestep_sparsity(_ir(tm, T=4, trained=6)) == pytest.approx((1 + 4) / 12)
    e = energy_section(_ir(tm, T=4, trained=6), weight_sparsity=0.75)
    assert e["relative_energy"] == pytest.approx(0.25 * (1 - 5 / 12), abs=1e-6)
    assert (e["time_steps"], e["time_steps_trained"]) == (4, 6)
