"""The pruning a run gets when it names none (dpap_deploy/stages.py: _resolve_pruning;
train/families.py: PruningDefaults; docs/dpap.md sec. 6.12)."""
import json

import pytest

from dpap_deploy.pipeline import RunConfig, run_pipeline
from dpap_deploy.stages import RUN_LENGTH_MIN_EPOCHS, run_toml


def resolved(tmp_path, **options):
    """``(pruner, target_sparsity, regrow)`` after the prepare stage, and what run.toml records."""
    cfg = RunConfig(**{"target": "loihi-sim", "out": str(tmp_path / "run"), "force": True, **options})
    ctx = run_pipeline(cfg, stop_after="prepare")
    saved = run_toml(ctx.cfg)
    got = (ctx.cfg.pruner, ctx.cfg.target_sparsity, ctx.cfg.regrow)
    assert (saved["pruner"], saved["target-sparsity"], saved["regrow"]) == got  # what ran is what is saved
    return got


@pytest.mark.parametrize("options, expected", [
    # the families whose Pareto benchmark measured a pruner that beats magnitude pruning
    ({"epochs": 40}, ("dpap-magnitude", 0.92, 0.3)),
    ({"epochs": 30, "model": "snn-2c2f"}, ("dpap-magnitude", 0.8, 0.0)),
    ({"epochs": 30, "model": "snn-cnn"}, ("dpap-magnitude", 0.8, 0.0)),
    # ANNs: the paper's rule (the hybrid was not measured on them)
    ({"epochs": 40, "model": "ann-mlp", "target": "onnx"}, ("dpap", 0.8, 0.0)),
    # a budget drives DPAP's rule; a short run would prune to the target in one epoch
    ({"epochs": 40, "fit": True}, ("dpap", 0.92, 0.0)),
    ({"epochs": 40, "budget_cores": 2}, ("dpap", 0.92, 0.0)),
    ({"epochs": RUN_LENGTH_MIN_EPOCHS - 1}, ("dpap", 0.92, 0.0)),
    ({"epochs": RUN_LENGTH_MIN_EPOCHS}, ("dpap-magnitude", 0.92, 0.3)),
    # what the run names wins; the family's regrowth goes with the family's pruner only
    ({"epochs": 40, "pruner": "magnitude"}, ("magnitude", 0.92, 0.0)),
    ({"epochs": 8, "pruner": "dpap-magnitude"}, ("dpap-magnitude", 0.92, 0.3)),
    ({"epochs": 40, "target_sparsity": 0.85}, ("dpap-magnitude", 0.85, 0.3)),
    ({"epochs": 40, "regrow": 0.0}, ("dpap-magnitude", 0.92, 0.0)),
    ({"epochs": 40, "pruner": "dpap"}, ("dpap", 0.92, 0.0)),
    ({"epochs": 40, "no_prune": True}, ("dense", 0.92, 0.0)),
])
def test_default_pruning_per_family_budget_and_run_length(tmp_path, options, expected):
    assert resolved(tmp_path, **options) == expected


def test_the_options_are_still_checked_after_the_defaults(tmp_path):
    from dpap_deploy.errors import DpapError

    with pytest.raises(DpapError, match=r"--target-sparsity must be in \[0, 1\), got 1.2"):
        resolved(tmp_path, epochs=40, target_sparsity=1.2)
    with pytest.raises(DpapError, match="--budget-cores/--fit drive DPAP during training; they cannot be used with "
                                        "--no-prune, --pruner other than dpap"):
        resolved(tmp_path, epochs=40, fit=True, pruner="dpap-magnitude")


def test_a_default_run_of_twenty_epochs_prunes_to_the_family_target_with_regrowth(tmp_path):
    """``dpap-export --target loihi-sim --epochs 20`` (no pruning option) on digits trains the snn-mlp
    with dpap-magnitude: the hidden synapses end at 8 % of the dense count (regrowth exchanges, it
    does not add), DPAP's neuron rule has removed hidden neurons, the report says which pruner ran
    with which target and regrowth, and Lava equals the emulator on every output spike."""
    from dpap_deploy.cli import main

    out = tmp_path / "default"
    assert main(["--target", "loihi-sim", "--epochs", "20", "--hidden", "48,24", "--time-steps", "12",
                 "--max-test", "24", "--lr", "0.01", "--batch-size", "64", "--quiet", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    tr = rep["training"]
    assert (tr["pruner"], tr["target_sparsity"], tr["regrow"]) == ("dpap-magnitude", 0.92, 0.3)
    hidden = [l for l in rep["model"]["layers"]][:-1]
    dense = sum(l["synapses_dense"] for l in hidden)
    assert dense == 64 * 48 + 48 * 24
    # the target counts the dense network's synapses: at most 8 % survive (a compacted-away
    # neuron's synapses count as removed), and the L1 step leaves the schedule's count, no fewer
    kept = sum(l["synapses"] for l in hidden)
    assert round(0.08 * dense) - 5 <= kept <= round(0.08 * dense) + 1, kept
    assert sum(l["n_out"] for l in hidden) < 48 + 24  # DPAP's neuron rule removed some
    assert rep["accuracy"]["norse"] > 0.5  # far above chance (0.1) with 8 % of the synapses
    assert rep["agreement"]["spikes"] == 1.0
    assert "pruner dpap-magnitude (target sparsity 0.92, regrowth 0.3)" in (out / "report.md").read_text()
