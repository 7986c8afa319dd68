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


def _prune_randomly(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for l, m in enumerate(model.masks[:-1]):
            if m.dim() == 4:  # conv: drop whole channels and some kernel slices
                keep = torch.rand(m.shape[:2], generator=g) < 0.7
                keep[: m.shape[0] // 3] = False
                m.copy_(keep[:, :, None, None].expand_as(m))
            else:
                m.copy_(torch.rand(m.shape, generator=g) < 0.4)
                m[: m.shape[0] // 4] = False
        model.apply_masks()


def test_conv_snn_compaction_removes_channels_and_keeps_function():
    from dpap_deploy.data.event_digits import load_event_digits
    from dpap_deploy.train.models import SpikingCNN

    ds = load_event_digits(time_steps=8, limit=60)
    torch.manual_seed(3)
    model = SpikingCNN((2, 20, 20), (6, 8), (20,), 10, init_gain=30.0).double()
    _prune_randomly(model, 1)
    small, kept = compact(model)
    small = small.double()
    assert small.channels[0] < 6 and small.channels[1] < 8 and small.hidden[0] < 20
    # the fc layer after the flatten lost the features of removed conv2 channels
    assert small.layers[2].weight.shape[1] == small.channels[1] * small.flat_hw
    x = torch.from_numpy(np.swapaxes(ds.x_train[:16], 0, 1)).double()
    a, rec_a = model(x)
    b, rec_b = small(x)
    assert a.sum() > 0 and rec_a[1][1].sum() > 0, "test needs an active network"
    torch.testing.assert_close(b, a, rtol=0, atol=0)
    torch.testing.assert_close(rec_b[1][1], rec_a[1][1][:, :, torch.as_tensor(kept[1])], rtol=0, atol=0)


def test_ann_compaction_keeps_logits(digits):
    from dpap_deploy.train.models import ANNCNN, ANNMLP

    x = torch.from_numpy(digits.x_test[:50]).double()
    mlp = ANNMLP([64, 40, 30, 10]).double()
    _prune_randomly(mlp, 2)
    small, _ = compact(mlp)
    assert small.sizes[1] < 40
    torch.testing.assert_close(small.double()(x)[0], mlp(x)[0])
    cnn = ANNCNN((1, 8, 8), (6, 8), (16,), 10).double()
    _prune_randomly(cnn, 3)
    small, _ = compact(cnn)
    assert small.channels[0] < 6
    xi = x.reshape(-1, 1, 8, 8)
    torch.testing.assert_close(small.double()(xi)[0], cnn(xi)[0])
