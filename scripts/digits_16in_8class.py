"""Write a digits set shaped for SynSense Xylo Audio 2 (16 inputs, 8 outputs) as ``.npz``.

scikit-learn's 8x8 digits, average-pooled 2x2 to 4x4 = 16 input channels, classes 0-7 only
(Xylo Audio 2 has 8 output neurons). For ``dpap-export --data FILE --profile xylo-audio2 --fit``.

    .venv/bin/python scripts/digits_16in_8class.py runs/digits16.npz
"""
import sys

import numpy as np
from sklearn.datasets import load_digits

from dpap_deploy.fileio import atomic_path

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "digits16.npz"
    d = load_digits()
    keep = d.target < 8
    x = (d.images[keep] / 16.0).reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(-1, 16).astype(np.float32)
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez(tmp, x=x, y=d.target[keep].astype(np.int64))
    print(f"{out}: {len(x)} samples, 16 features, 8 classes")
