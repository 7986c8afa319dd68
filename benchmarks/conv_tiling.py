"""Conv tiling (docs/deployment.md sec. 12): the paper's 2C2F mapped onto Loihi 1 and 2.

    .venv/bin/python benchmarks/conv_tiling.py

Builds 15C3-AP2-C3-AP2-300FC-10FC (``train/families.py`` ``snn-2c2f``, ``SpikingCNN``) with
untrained weights for 2-channel event frames of 20 x 20 (event-digits) and 34 x 34 (N-MNIST),
quantises it (``export/quantize.py``) and maps it (``map_network``, best of 3). The 34 x 34
network with 40 conv2 channels has fc1 neurons with 40 x 16 x 16 = 10,240 inputs (the second
pooling folded into fc1), more than a Loihi core's 4096 input axons, so it also runs with
conv2 compacted to 14 and 16 channels (as DPAP's channel pruning leaves it).
"""
import time

import torch

from dpap_deploy.export.quantize import quantize
from dpap_deploy.hardware_profiles import load_profile
from dpap_deploy.mapping import map_network
from dpap_deploy.train.compact import to_ir
from dpap_deploy.train.models import SpikingCNN

CASES = [  # (input height = width, conv2 channels)
    (20, 40), (34, 40), (34, 16), (34, 14),
]


def tiles(report: dict) -> str:
    return "; ".join(f"{l['layer']} {l['tile']['rows']}x{l['tile']['cols']}x{l['tile']['channels']} ({l['tiles']})"
                     for l in report["per_layer"] if "tile" in l)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("| input | conv2 ch | profile | cores used | lower bound | used / bound | fits | conv tiles (count) | map s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for hw, c2 in CASES:
        torch.manual_seed(0)
        ir = quantize(to_ir(SpikingCNN((2, hw, hw), (15, c2), (300,), 10), 20))
        for name in ("loihi2", "loihi1"):
            best, res = float("inf"), None
            for _ in range(3):
                t = time.perf_counter()
                try:
                    res = map_network(ir, load_profile(name)).to_report()
                except Exception as exc:  # a neuron no core can hold
                    res = exc
                best = min(best, time.perf_counter() - t)
            if isinstance(res, Exception):
                print(f"| {hw}x{hw} | {c2} | {name} | - | - | - | {type(res).__name__}: {res} | - | {best:.2f} |")
                continue
            u, lb = res["cores_used"], res["cores_lower_bound"]
            print(f"| {hw}x{hw} | {c2} | {name} | {u} | {lb} | {u / lb:.2f} | {res['fits']} | {tiles(res)} | {best:.2f} |")
