"""How long the mapper takes on networks of about 10^6 synapses (issue 4: well under a second).

    .venv/bin/python benchmarks/mapping_scale.py

Random masks at the given density (the mapper only reads which synapses survive); best of
3 runs of ``map_network`` per case, on one CPU thread.
"""
import time

import numpy as np
import torch

from dpap_deploy.hardware_profiles import load_profile
from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR
from dpap_deploy.mapping import map_network

CASES = [  # (sizes, density)
    ([1024, 1024, 10], 1.0),            # ~1.06M synapses, dense
    ([1024, 2048, 1024, 10], 0.25),     # ~1.06M synapses, 75 % pruned
    ([4096, 4096, 1024, 10], 0.05),     # ~1.05M synapses, 95 % pruned, wide layers
]


def net(sizes, density, seed=0):
    rng = np.random.default_rng(seed)
    layers, n_in = [], sizes[0]
    for i, n in enumerate(sizes[1:]):
        m = rng.random((n, n_in)) < density
        layers.append(FCLayer(f"fc{i + 1}", m.astype(np.float32), m, LIFNeurons(5e-3, 10e-3, 1.0), (n, n_in)))
        n_in = n
    return NetworkIR("bench", sizes[0], 8, 1e-3, layers)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("| network | synapses | profile | cores used | lower bound | fits | map s (best of 3) |")
    print("|---|---|---|---|---|---|---|")
    for sizes, density in CASES:
        ir = net(sizes, density)
        for name in ("loihi1", "loihi2", "truenorth"):
            prof = load_profile(name)
            best, m = float("inf"), None
            for _ in range(3):
                t = time.perf_counter()
                try:
                    m = map_network(ir, prof)
                except Exception as exc:  # e.g. TrueNorth: a neuron's fan-in above 256 axons
                    m = exc
                best = min(best, time.perf_counter() - t)
            shape = "-".join(map(str, sizes))
            if isinstance(m, Exception):
                print(f"| {shape} @ {density} | {ir.synapses:,} | {name} | - | - | {type(m).__name__}: {m} | {best:.3f} |")
            else:
                print(f"| {shape} @ {density} | {ir.synapses:,} | {name} | {len(m.cores)} | {m.lower_bound} | {m.fits} | {best:.3f} |")
