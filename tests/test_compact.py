import numpy as np
import torch

from dpap_deploy.data import rate_encode
from dpap_deploy.train.compact import compact, surviving_neurons, to_ir
from dpap_deploy.train.models import SpikingMLP


def _pruned_model():
    torch.manual_seed(1)
    model = SpikingMLP([64, 40, 30, 10], init_gain=8.0).double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.masks:
            m.copy_(torch.rand(m.shape, generator=g) < 0.5)
        model.masks[0][:8] = False          # neurons 0-7 of fc1: no dendrite
        model.masks[1][:, 10:15] = False    # fc1 neurons 10-14: nobody listens
        model.masks[2][:, :6] = False       # fc2 neurons 0-5: nobody listens
        model.apply_masks()
    return model


def test_surviving_neurons_removes_unreachable_and_unheard():
    model = _pruned_model()
    kept = surviving_neurons([m.numpy() for m in model.masks])
    assert not set(range(8)) & set(kept[0]) and not set(range(10, 15)) & set(kept[0])
    assert not set(range(6)) & set(kept[1])
    assert len(kept[2]) == 10  # classes always stay


def test_compaction_keeps_the_networks_function(digits):
    model = _pruned_model()
    small, kept = compact(model)
    assert small.sizes[1] < 40 and small.sizes[2] < 30 and small.sizes[-1] == 10
    assert [fc.weight.shape[0] for fc in small.fcs] == list(small.sizes[1:])
    x = torch.from_numpy(rate_encode(digits.x_test[:100], 24, seed=5)).double()
    small = small.double()
    counts_big, rec_big = model(x)
    counts_small, rec_small = small(x)
    assert counts_big.sum() > 0, "test needs an active network"
    torch.testing.assert_close(counts_small, counts_big, rtol=0, atol=0)
    for l, k in enumerate(kept[:-1]):
        torch.testing.assert_close(rec_small[l][1], rec_big[l][1][..., torch.as_tensor(k)], rtol=0, atol=0)
    # synapses survive compaction unchanged in number where neurons were kept
    assert sum(int(m.sum()) for m in small.masks) <= sum(int(m.sum()) for m in model.masks)


def test_ir_of_compacted_model():
    small, _ = compact(_pruned_model())
    ir = to_ir(small, time_steps=24)
    assert [l.dense_shape for l in ir.layers] == [(40, 64), (30, 40), (10, 30)]
    assert ir.synapses == sum(int(m.sum()) for m in small.masks)
    assert ir.layers[0].neurons.tau_syn_s == 1 / 200 and ir.layers[0].neurons.tau_mem_s == 1 / 100
    np.testing.assert_array_equal(ir.layers[1].weight != 0, ir.layers[1].mask & (ir.layers[1].weight != 0))
