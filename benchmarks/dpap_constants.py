"""How DPAP's constants set the compression/accuracy trade-off (SNN MLP 64-128-64-10, digits, T = 16, seed 0).

    python benchmarks/dpap_constants.py
"""
import torch

from dpap_deploy.data import load_digits
from dpap_deploy.train.dpap import DPAPConfig, RuleConstants
from dpap_deploy.train.loop import TrainConfig, train
from dpap_deploy.train.models import SpikingMLP

SWEEP = [  # (c, b, rho, r_init, e0, epochs)
    (1.5, 2, 13, 10, 5, 30),
    (1.5, 2, 13, 5, 3, 30),
    (2.5, 2, 13, 5, 3, 30),
    (1.5, 2, 13, 5, 3, 50),
]

if __name__ == "__main__":
    torch.set_num_threads(2)
    ds = load_digits()
    print("| c | b | rho | R init | e0 | epochs | accuracy % | fc1 neurons / synapses | fc2 neurons / synapses | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c, b, rho, r, e0, ep in SWEEP:
        rc = RuleConstants(c, b, rho)
        res = train(ds, TrainConfig(epochs=ep, time_steps=16), DPAPConfig(fc_neuron=rc, fc_synapse=rc, r_init=r, e0=e0),
                    progress=False, model=SpikingMLP([64, 128, 64, 10]))
        h = res.history[-1]
        l1, l2 = h["layers"]["fc1"], h["layers"]["fc2"]
        print(f"| {c} | {b} | {rho} | {r} | {e0} | {ep} | {100 * h['test_accuracy']:.2f} | {l1['neurons']} / {l1['synapses']} "
              f"| {l2['neurons']} / {l2['synapses']} | {res.seconds:.1f} |", flush=True)
