"""Hardware budgets drive DPAP: infeasible budgets are named, feasible ones end fitting."""
import pytest
import torch

from dpap_deploy.budget import Budget
from dpap_deploy.data import load_digits
from dpap_deploy.errors import BudgetError
from dpap_deploy.hardware_profiles import load_profile
from dpap_deploy.mapping import map_network
from dpap_deploy.train.compact import to_ir
from dpap_deploy.train.dpap import DPAPConfig, RuleConstants
from dpap_deploy.train.loop import TrainConfig, train
from dpap_deploy.train.models import SpikingMLP


def test_infeasible_budgets_name_the_binding_limit():
    with pytest.raises(BudgetError, match="64 input channels; xylo-audio2 takes 16"):
        Budget(load_profile("xylo-audio2")).check_feasible([64, 32, 10], prunable=1)
    with pytest.raises(BudgetError, match="10 output neurons; xylo-audio2 has 8"):
        Budget(load_profile("xylo-audio2")).check_feasible([16, 32, 10], prunable=1)
    # 1500 output neurons need 2 loihi1 cores whatever DPAP does to the hidden layer
    with pytest.raises(BudgetError, match="cores used; .*has 1"):
        Budget(load_profile("loihi1").with_cores(1)).check_feasible([64, 32, 1500], prunable=1)
    Budget(load_profile("xylo-audio2")).check_feasible([16, 500, 8], prunable=1)  # feasible: no error


def test_targets_share_the_budget_by_dense_size(tmp_path):
    prof = tmp_path / "small.toml"
    prof.write_text('extends = "loihi1"\nname = "small"\ndescription = "40-neuron cores"\n'
                    "[core]\nneurons = 40  # test\n")
    b = Budget(load_profile(str(prof)).with_cores(2))
    t = b.derive_targets(to_ir(SpikingMLP([64, 64, 32, 10]), 8), prunable=2)
    # 2 cores x 40 neurons - 10 output neurons = 70, shared 64:32 -> 46 and 23
    assert (t["fc1"].max_neurons, t["fc2"].max_neurons) == (46, 23)
    assert t["fc1"].max_fan_in == 4096


def _two_small_cores(tmp_path):
    """Two Loihi 1 cores of 40 neurons each: the 106 hidden and output neurons of a 64-64-32-10 MLP do not fit."""
    prof = tmp_path / "small.toml"
    prof.write_text('extends = "loihi1"\nname = "small"\ndescription = "40-neuron cores"\n'
                    "[core]\nneurons = 40  # test\n")
    return load_profile(str(prof)).with_cores(2)


def test_budget_prunes_into_the_recovery_tail_until_it_fits(tmp_path):
    """A run-length schedule stops pruning at ``stop_epoch``; a budget not met by then keeps it going."""
    budget_profile = _two_small_cores(tmp_path)
    torch.manual_seed(0)
    model = SpikingMLP([64, 64, 32, 10])
    rc = RuleConstants(0.625, 2.0, 10.0)
    cfg = DPAPConfig(fc_neuron=rc, fc_synapse=rc, r_init=2.0, e0=1, stop_epoch=2)
    b = Budget(budget_profile)
    res = train(load_digits(), TrainConfig(epochs=8, time_steps=8, batch_size=64, seed=0, lr=1e-2), cfg,
                progress=False, model=model, budget=b)
    assert b.met_epoch is not None and b.met_epoch >= cfg.stop_epoch  # met only inside the tail
    assert map_network(to_ir(res.model, 8), budget_profile).fits
    neurons = [sum(h["layers"][n]["neurons"] for n in ("fc1", "fc2")) for h in res.history]
    assert neurons[b.met_epoch] < neurons[cfg.stop_epoch - 1]  # pruned after stop_epoch
    assert len(set(neurons[b.met_epoch:])) == 1  # and not after it fit


def test_budget_loop_prunes_until_the_network_fits(tmp_path):
    budget_profile = _two_small_cores(tmp_path)
    torch.manual_seed(0)
    model = SpikingMLP([64, 64, 32, 10])
    assert not map_network(to_ir(model, 8), budget_profile).fits  # 106 neurons > 80
    rc = RuleConstants(0.625, 2.0, 10.0)
    cfg = DPAPConfig(fc_neuron=rc, fc_synapse=rc, r_init=2.0, e0=1)
    b = Budget(budget_profile)
    res = train(load_digits(), TrainConfig(epochs=10, time_steps=8, batch_size=64, seed=0, lr=1e-2), cfg,
                progress=False, model=model, budget=b)
    assert b.met_epoch is not None and res.state.frozen
    final = map_network(to_ir(res.model, 8), budget_profile)
    assert final.fits and len(final.cores) <= 2
    assert max(res.state.c_boost.values()) > 0  # the knob moved
    # pruning stopped once it fit: no unit removed after the epoch the budget was met
    after = [h["synapses"] for h in res.history if h["epoch"] >= b.met_epoch + 1]
    assert len(set(after)) <= 1
    assert res.history[-1]["test_accuracy"] > 0.6  # 10 % is chance
