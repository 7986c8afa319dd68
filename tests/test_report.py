import copy

import pytest

from dpap_deploy.hardware_profiles import load_profile
from dpap_deploy.mapping import map_network
from dpap_deploy.report import markdown_report, model_section, summary_text, validate
from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR
import numpy as np


def _report():
    n = LIFNeurons(5e-3, 10e-3, 1.0)
    m = np.zeros((3, 4), bool)
    m[0, :2] = True
    ir = NetworkIR("t", 4, 8, 1e-3, [FCLayer("fc1", m * 1.0, m, n, (6, 4))])
    model = model_section(ir, {"fc1": 2}, "test")
    return {"target": "loihi-sim", "profile": "loihi2",
            "dataset": {"name": "d", "n_train": 1, "n_test": 1, "time_steps": 8},
            "model": model, "accuracy": {"norse": 0.5, "lava": 0.5}, "agreement": {"predictions": 1.0},
            "resources": map_network(ir, load_profile("loihi2")).to_report(),
            "timing_s": {"train": 1.0, "export": 2.2, "lava_sim": 2.0, "probe": 0.1, "measure": 0.2, "total": 3.5}}


def test_model_section_counts_from_the_given_export():
    m = _report()["model"]
    assert m["synapses"] == 2 and m["synapses_dense"] == 24 and m["neurons"] == 3 and m["neurons_dense"] == 6
    assert m["sparsity"] == pytest.approx(1 - 2 / 24) and m["compression_ratio"] == 12.0


@pytest.mark.parametrize("path", [("accuracy", "norse"), ("resources", "fits"), ("timing_s", "lava_sim"), ("target",)])
def test_validate_names_the_missing_key(path):
    r = copy.deepcopy(_report())
    validate(r)
    d = r
    for k in path[:-1]:
        d = d[k]
    del d[path[-1]]
    with pytest.raises(ValueError, match=".".join(path)):
        validate(r)


def test_summary_mentions_accuracy_and_fit():
    text = summary_text(_report())
    assert "Lava fixed point 50.00 %" in text and "fits" in text and "sparsity 91.7 %" in text


def test_timing_total_must_cover_the_stages_and_the_markdown_lists_them():
    r = copy.deepcopy(_report())
    md = markdown_report(r)
    assert "| export | 2.20 | 62.9 % |" in md and "| &nbsp;&nbsp;lava_sim | 2.00 | 57.1 % |" in md
    assert "| &nbsp;&nbsp;probe | 0.10 |" in md and "| **total** | 3.50 | 100 % |" in md
    assert "total 3.5 s" in summary_text(r)
    r["timing_s"]["total"] = 3.0  # train + export + measure = 3.4 s
    with pytest.raises(ValueError, match="less than the sum of its stages"):
        validate(r)


def test_layers_with_a_timestep_mask_report_its_gate_and_the_pairs_it_silences():
    n = LIFNeurons(5e-3, 10e-3, 1.0)
    tm = np.ones((3, 10), bool)
    tm[0, :4] = False   # inside the 8-step window: 4 of 24 pairs
    tm[1, 9] = False    # beyond it: not counted
    layer = FCLayer("fc1", np.ones((3, 4)), np.ones((3, 4), bool), n, (3, 4), time_mask=tm, time_gate="hold")
    plain = FCLayer("fc2", np.ones((2, 3)), np.ones((2, 3), bool), n, (2, 3))
    m = model_section(NetworkIR("t", 4, 8, 1e-3, [layer, plain]), {"fc1": 12, "fc2": 6}, "test")
    assert m["layers"][0]["time_mask"] == {"gate": "hold", "silenced": round(4 / 24, 6)}
    assert "time_mask" not in m["layers"][1]
    r = _report()
    r["model"] = m
    r["energy"] = {"rho_w": 0.0, "rho_t": 0.1, "relative_energy": 0.9, "time_steps": 8, "time_steps_trained": 10,
                   "synops_per_sample": {"norse": 1.0}}
    assert "Timestep masks: fc1 hold (16.7 % of (unit, step) pairs silenced)" in markdown_report(r)
