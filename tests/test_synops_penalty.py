"""The synaptic-operation penalty (train/synops.py, --synops-penalty): the count it trains on
equals the count the report measures, it is differentiable in the hidden spikes, and it trains
networks that spike less."""
import pytest
import torch

from dpap_deploy.data import rate_encode
from dpap_deploy.train.models import (ANNMLP, SequentialNet, SpikingMLP, conv_def, flatten_def, lif_def,
                                      linear_def)
from dpap_deploy.train.pruners import dense_count
from dpap_deploy.train.synops import fan_out, synops_per_sample


def _random_masks(model, keep: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.masks:
            m.copy_(torch.rand(m.shape, generator=g) < keep)
    model.apply_masks()


def test_fan_out_by_hand():
    model = SpikingMLP([3, 2, 2])
    with torch.no_grad():
        model.masks[0].copy_(torch.tensor([[1, 0, 1], [1, 0, 0]], dtype=torch.bool))
    assert fan_out(model)[0].tolist() == [2.0, 0.0, 1.0]
    assert fan_out(model)[1].tolist() == [2.0, 2.0]
    # a conv of stride 2: each input position is reached by (kept taps) / stride**2 output positions
    cnn = SequentialNet((2, 8, 8), [conv_def(3, 3, stride=2, padding=1), lif_def(), flatten_def(), linear_def(4),
                                    lif_def()])
    with torch.no_grad():
        cnn.masks[0].zero_()
        cnn.masks[0][0, 0, 0, 0] = True
        cnn.masks[0][1, 0, 1, :] = True  # 3 taps
        cnn.masks[0][2, 1, :, :] = True  # 9 taps from input channel 1
    assert fan_out(cnn)[0].tolist() == [4 / 4, 9 / 4]


def test_count_equals_the_reports_count_from_the_same_spikes(digits):
    """train/synops.py against dpap_deploy/energy.py (an independent count on the IR's surviving
    synapses) for a randomly pruned MLP on rate-coded digits."""
    from dpap_deploy.energy import synops_per_sample as measured
    from dpap_deploy.train.compact import compact, to_ir

    torch.manual_seed(0)
    model = SpikingMLP([64, 40, 20, 10])
    _random_masks(model, 0.4, seed=1)
    x = torch.from_numpy(rate_encode(digits.x_test[:50], 16, seed=3))
    small = compact(model)[0]  # as training runs it: compacted whenever units were removed
    with torch.no_grad():
        _, records = small(x)
    assert sum(float(r[1].sum()) for r in records[:-1]) > 100  # the hidden populations do spike
    ours = float(synops_per_sample(small, records))
    ref = measured(to_ir(small, 16), [r[0].numpy() for r in records])
    assert ours == pytest.approx(ref, rel=1e-6)


def test_penalty_is_differentiable_in_hidden_spikes_only(digits):
    torch.manual_seed(0)
    model = SpikingMLP([64, 32, 10])
    x = torch.from_numpy(rate_encode(digits.x_train[:16], 12, seed=0))
    _, records = model(x)
    s = synops_per_sample(model, records)
    s.backward()
    # the input's count is fixed by the data; the hidden layer's spikes reach fc2's synapses
    assert model.layers[0].weight.grad is not None and float(model.layers[0].weight.grad.abs().sum()) > 0
    assert model.layers[1].weight.grad is None or float(model.layers[1].weight.grad.abs().sum()) == 0


def test_the_penaltys_normaliser_is_the_unpruned_count():
    model = SpikingMLP([64, 32, 10])
    assert dense_count(model, [0, 1]) == 64 * 32 + 32 * 10
    small = model.resized([20, 10])  # 12 hidden neurons removed
    small.dense_widths = [32, 10]
    assert dense_count(small, [0, 1]) == 64 * 32 + 32 * 10
    assert dense_count(small, [0]) == 64 * 32


def test_ann_is_refused():
    with pytest.raises(ValueError, match="not spiking"):
        synops_per_sample(ANNMLP([4, 3, 2]), [])


def test_training_with_the_penalty_spikes_less(digits):
    """Same seed, same data, 4 epochs: the penalised run's hidden population spikes less per test
    sample (each of its spikes is 10 synaptic operations into the dense output layer) and still learns."""
    from dpap_deploy.train.loop import TrainConfig, train

    x = torch.from_numpy(rate_encode(digits.x_test, 16, seed=5))
    counts, accs = [], []
    for lam in (0.0, 0.5):
        cfg = TrainConfig(epochs=4, time_steps=16, hidden=(48,), lr=1e-2, seed=0, prune=False, synops_penalty=lam,
                          fixed_point_eval=False)
        res = train(digits, cfg, progress=False, method="dense")
        with torch.no_grad():
            scores, records = res.model(x)
        counts.append(float(records[0][1].sum()) / len(digits.y_test))  # hidden spikes per sample
        accs.append(float((scores.argmax(1).numpy() == digits.y_test).mean()))
        if lam:
            assert all("train_synops_per_sample" in h for h in res.history)
    assert counts[1] < 0.7 * counts[0], counts
    assert accs[1] > 0.8, accs


def test_cli_refuses_a_negative_penalty_and_an_ann(tmp_path):
    from dpap_deploy.cli import main

    assert main(["--target", "onnx", "--model", "ann-mlp", "--synops-penalty", "0.1", "--epochs", "1",
                 "--out", str(tmp_path / "a")]) == 2
    assert main(["--target", "loihi-sim", "--synops-penalty", "-1", "--epochs", "1", "--out", str(tmp_path / "b")]) == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
