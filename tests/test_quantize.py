import numpy as np
import pytest

from dpap_deploy.errors import QuantizationError
from dpap_deploy.export.quantize import decay_registers, quantize_layer, to_even_int
from dpap_deploy.ir import FCLayer, LIFNeurons


def test_decays_of_norse_defaults_hand_checked():
    # Norse defaults: tau_syn_inv = 200/s, tau_mem_inv = 100/s, dt = 1 ms.
    # i decays by dt/tau_syn = 0.2 per step: lava-dl iDecay = round(4096 * 0.2) = 819, Lava du = 818.
    # v decays by dt/tau_mem = 0.1 per step: dv = round(409.6) = 410.
    assert decay_registers(1e-3, 5e-3, 10e-3) == (818, 410)
    # dt == tau: full decay, the largest register
    assert decay_registers(1e-3, 1e-3, 1e-3) == (4095, 4095)


def test_decay_out_of_range_names_the_layer():
    with pytest.raises(QuantizationError, match="layer 'fc2'.*tau_mem"):
        decay_registers(1e-3, 5e-3, 0.5e-3, layer="fc2")


def test_even_rounding_and_8bit_clip():
    np.testing.assert_array_equal(to_even_int([0.9, 1.1, 3.2, -3.2, 300, -300, 253.2]),
                                  [0, 2, 4, -4, 254, -256, 254])


def _layer(w, mask=None, v_th=1.0):
    w = np.asarray(w, dtype=np.float32)
    mask = np.ones(w.shape, bool) if mask is None else mask
    return FCLayer("fc1", w, mask, LIFNeurons(5e-3, 10e-3, v_th), w.shape)


def test_weight_scale_and_threshold_hand_checked():
    # a_v = dt/tau_mem = 0.1; largest |a_v w| = 0.1 -> s = 254 / 0.1 = 2540
    q = quantize_layer(_layer([[1.0, -0.5, 0.25], [0.0, 0.1, -1.0]]), dt_s=1e-3).fixed
    assert q.weight_exp == 0 and q.scale == pytest.approx(2540.0)
    np.testing.assert_array_equal(q.weight, [[254, -128, 64], [0, 26, -254]])  # 25.4 -> 26 (even)
    assert q.vth == 2540  # round(s * v_th)
    assert (q.du, q.dv) == (818, 410)


def test_pruned_synapses_are_zero_and_tiny_weights_use_negative_exponent():
    mask = np.array([[True, False], [True, True]])
    q = quantize_layer(_layer([[1.0, 5.0], [0.5, 0.2]], mask), 1e-3).fixed
    assert q.weight[0, 1] == 0 and q.weight[0, 0] == 254  # the pruned 5.0 does not set the scale
    # tiny weights: vth = 254/(0.1*1e-4) would need 28 bits -> right-shift the input instead
    q2 = quantize_layer(_layer([[1e-4, -1e-4]]), 1e-3).fixed
    assert q2.weight_exp < 0 and q2.vth <= 2**17 - 1
    assert q2.vth == pytest.approx(254 * 2.0**q2.weight_exp / (0.1 * 1e-4), rel=1e-4)
