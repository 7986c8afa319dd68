"""--pruner dpap-synops (train/pruners.py: DPAPSynopsPruner): synapses ranked by importance per
synaptic operation, |w| / c_l ** p, c_l the layer's operations per synapse, docs/dpap.md sec. 6.10."""
import torch

from dpap_deploy.train.dpap import DPAPConfig, RuleConstants
from dpap_deploy.train.models import SequentialNet, SpikingMLP, conv_def, flatten_def, lif_def, linear_def
from dpap_deploy.train.pruners import magnitude_step, per_operation_scores, presynaptic_events


def test_presynaptic_events_count_spikes_per_unit():
    fc = torch.zeros(3, 2, 4)  # (T, B, F)
    fc[0, 0, 1] = fc[2, 1, 1] = fc[1, 1, 3] = 1.0
    assert presynaptic_events(fc).tolist() == [0.0, 2.0, 0.0, 1.0]
    conv = torch.zeros(2, 1, 2, 3, 3)  # (T, B, C, H, W): a channel's positions are summed
    conv[0, 0, 1, 0, 0] = conv[1, 0, 1, 2, 2] = conv[1, 0, 0, 1, 1] = 1.0
    assert presynaptic_events(conv).tolist() == [1.0, 2.0]


def test_per_operation_scores_by_hand():
    model = SpikingMLP([3, 2, 2])
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, -4.0, 1.0]]))
        model.masks[0][1, 0] = False  # pruned: scores 0
    events = [torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64), torch.tensor([9.0, 1.0], dtype=torch.float64)]
    shipped = DPAPConfig().synops_cost_power
    assert shipped == 0.25
    s = per_operation_scores(model, [0], events, shipped)[(model.layers[0], "weight")]
    # fan-out (mask column sums) [1, 2, 2]: ops 4*1 + 1*2 + 0*2 = 6 over 5 synapses, c = 1.2: the shipped
    # p = 0.25 gives |w| / 1.2 ** 0.25
    torch.testing.assert_close(s[:, :2], torch.tensor([[1.0, 2.0], [0.0, 4.0]]) / 1.2 ** 0.25)
    assert s[1, 0].item() == 0.0
    # input 2 never spiked: the floor, below every weight whose input spiked
    assert 0.0 < s[0, 2].item() < 1e-20 and 0.0 < s[1, 2].item() < 1e-20
    # the power: |w| / c
    s1 = per_operation_scores(model, [0], events, 1.0)[(model.layers[0], "weight")]
    torch.testing.assert_close(s1[0, :2], torch.tensor([1.0, 2.0]) / 1.2)
    # analog current input (skip_first): layer 0 costs the other layers' mean, layer 1's
    # (9*2 + 1*2) / 4 = 5, and its every input counts as spiking: |w| / 5 ** 0.5 at p = 0.5
    s0 = per_operation_scores(model, [0, 1], events, 0.5, skip_first=True)[(model.layers[0], "weight")]
    torch.testing.assert_close(s0[0], torch.tensor([1.0, 2.0, 3.0]) / 5 ** 0.5)
    # a conv of stride 2: 3 x 2 x 3 x 3 = 54 synapses, fan-out 3 * 9 / 4 per channel, ops
    # (16 + 4) * 6.75 = 135 per sample: c = 2.5, each weight used n / 4 times on average
    cnn = SequentialNet((2, 8, 8), [conv_def(3, 3, stride=2, padding=1), lif_def(), flatten_def(), linear_def(4),
                                    lif_def()])
    with torch.no_grad():
        cnn.layers[0].weight.fill_(0.5)
    events_cnn = [torch.tensor([16.0, 4.0], dtype=torch.float64)]
    sc = per_operation_scores(cnn, [0], events_cnn, shipped)[(cnn.layers[0], "weight")]
    torch.testing.assert_close(sc, torch.full_like(sc, 0.5 / 2.5 ** 0.25))


def test_scores_move_pruning_to_the_layer_whose_inputs_spike_most():
    """Equal |w| in two layers: magnitude would prune both alike; per operation, the layer whose
    presynaptic units spike 9 times as often (c = 9 against 1: at p = 0.5, 3x per |w|) loses its synapses first,
    and within each layer the smallest |w| go."""
    torch.manual_seed(0)
    model = SpikingMLP([10, 10, 10, 2])
    with torch.no_grad():
        w = torch.rand(10, 10) + 0.1
        model.layers[0].weight.copy_(w)
        model.layers[1].weight.copy_(w.flip(0))
    events = [torch.full((10,), 9.0, dtype=torch.float64), torch.full((10,), 1.0, dtype=torch.float64),
              torch.ones(10, dtype=torch.float64)]
    scores = per_operation_scores(model, [0, 1], events, 0.5)
    magnitude_step(model, [0, 1], 0.5, 0, 0, 1, tail=0.0, scores=scores)  # one step to 50 % of 200
    kept0, kept1 = int(model.masks[0].sum()), int(model.masks[1].sum())
    assert kept0 + kept1 == 100
    assert kept0 < 25 < 75 < kept1
    # every pruned weight of layer 0 scored below every kept one of either layer
    w0 = w / 3
    assert float(w0[~model.masks[0]].max()) <= min(float(w0[model.masks[0]].min()),
                                                   float(w.flip(0)[model.masks[1]].min()))
    assert float(w.flip(0)[~model.masks[1]].max()) <= float(w.flip(0)[model.masks[1]].min())


def test_dpap_synops_run_on_digits(digits):
    """A short run: DPAP's neuron rule removes hidden neurons, DPAP's own synapse rule stays off,
    and the hidden synapses end at or below 1 - S of the dense count, at a useful accuracy."""
    from dpap_deploy.train.loop import TrainConfig, train

    cfg = DPAPConfig(e0=1, r_init=2.0, fc_neuron=RuleConstants(0.6, 2.0, 13.0))
    res = train(digits, TrainConfig(epochs=8, hidden=(48, 24), time_steps=8, lr=1e-2, seed=0, fixed_point_eval=False),
                cfg, progress=False, method="dpap-synops", target_sparsity=0.7)
    assert res.model.sizes[1] + res.model.sizes[2] < 48 + 24
    assert all(bool(a.all()) for a in res.state.synapse_alive.values())
    dense_hidden = 64 * 48 + 48 * 24
    hidden = sum(int(m.sum()) for m in res.model.masks[:-1])
    assert 0.5 * 0.3 * dense_hidden <= hidden <= round(0.3 * dense_hidden)
    assert res.history[-1]["test_accuracy"] > 0.7


def test_events_are_summed_over_ranks_before_they_rank():
    """Data-parallel training: the epoch's presynaptic events and sample count go through the same
    ``reduce`` as DPAP's statistics (here two identical ranks: everything doubles), so the events per
    sample, and with them the ranking, are those of the global batch on every rank."""
    from dpap_deploy.train.pruners import make_pruner

    torch.manual_seed(0)
    model = SpikingMLP([6, 5, 3])
    p = make_pruner("dpap-synops", DPAPConfig(e0=0), 0.5)
    p.start(model)
    x = (torch.rand(4, 2, 6) < 0.5).float()  # (T, B, F)
    h = (torch.rand(4, 2, 5) < 0.5).float()
    records = [(x, h), (h, torch.zeros(4, 2, 3))]
    calls = []

    def reduce(tensors):
        calls.append(len(tensors))
        return [2 * t for t in tensors]

    p.observe(records, reduce)
    assert p._samples == 4.0
    torch.testing.assert_close(p._events[0], 2 * x.sum(dim=(0, 1)).double())
    torch.testing.assert_close(p._events[1], 2 * h.sum(dim=(0, 1)).double())
    assert len(calls) == 2  # DPAP's statistics, then the events with the sample count


def test_synops_cost_power_option_is_checked_and_reaches_the_pruner(tmp_path):
    """--synops-cost-power: refused with another pruner or out of range (naming the option), and with
    --pruner dpap-synops it is the exponent the run's DPAP configuration carries."""
    import pytest

    from dpap_deploy.errors import DpapError
    from dpap_deploy.pipeline import RunConfig, run_pipeline

    base = dict(target="loihi-sim", epochs=2, time_steps=4, max_test=4, force=True)
    with pytest.raises(DpapError, match="--synops-cost-power 0.5: it sets the synapse ranking of --pruner "
                                        "dpap-synops; this run's pruner is 'dpap'"):
        run_pipeline(RunConfig(out=str(tmp_path / "a"), synops_cost_power=0.5, **base), stop_after="model")
    with pytest.raises(DpapError, match=r"--synops-cost-power: DPAPConfig.synops_cost_power must be in \[0, 4\], got -1"):
        run_pipeline(RunConfig(out=str(tmp_path / "b"), pruner="dpap-synops", synops_cost_power=-1.0, **base),
                     stop_after="model")
    ctx = run_pipeline(RunConfig(out=str(tmp_path / "c"), pruner="dpap-synops", synops_cost_power=0.5, **base),
                       stop_after="model")
    assert ctx.dpap_cfg.synops_cost_power == 0.5


def test_a_checkpoint_carries_the_epochs_event_counts(tmp_path):
    """Resumed mid-epoch, the pruner continues the epoch's presynaptic counts (saved with DPAP's
    state through the checkpoint file), so the ranking at the epoch's end is the uninterrupted run's."""
    from dpap_deploy.tensorfile import load_tree, save_tree
    from dpap_deploy.train.pruners import make_pruner

    torch.manual_seed(1)
    model = SpikingMLP([6, 5, 3])
    batches = [[((torch.rand(4, 2, 6) < 0.5).float(), (torch.rand(4, 2, 5) < 0.5).float()),
                ((torch.rand(4, 2, 5) < 0.5).float(), torch.zeros(4, 2, 3))] for _ in range(3)]
    whole = make_pruner("dpap-synops", DPAPConfig(e0=0), 0.5)
    whole.start(model)
    for r in batches:
        whole.observe(r)
    cut = make_pruner("dpap-synops", DPAPConfig(e0=0), 0.5)
    cut.start(model)
    cut.observe(batches[0])
    path = str(tmp_path / "state.safetensors")
    save_tree(path, cut.state_dict(), "test", 1)
    again = make_pruner("dpap-synops", DPAPConfig(e0=0), 0.5)
    again.start(model, load_tree(path, "test", 1))
    for r in batches[1:]:
        again.observe(r)
    assert again._samples == whole._samples == 6.0
    for a, b in zip(again._events, whole._events):
        torch.testing.assert_close(a, b)
