"""Reading N-MNIST ATIS .bin recordings from disk (files written here byte by byte)."""
import os

import numpy as np
import pytest

from dpap_deploy.errors import DataError
from dpap_deploy.data.nmnist import events_to_frames, load_nmnist, read_nmnist_bin


def _write(path, rows):
    """rows of (x, y, p, t) packed by hand into 5-byte ATIS events."""
    data = bytearray()
    for x, y, p, t in rows:
        data += bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_decodes_hand_packed_bytes(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(bytes([3, 5, 0x81, 0x02, 0x03, 33, 0, 0x00, 0x00, 0x07]))
    ev = read_nmnist_bin(str(p))
    assert ev["x"].tolist() == [3, 33]
    assert ev["y"].tolist() == [5, 0]
    assert ev["p"].tolist() == [1, 0]
    assert ev["t"].tolist() == [0x010203, 7]


def test_truncated_and_foreign_files_are_named(tmp_path):
    p = tmp_path / "cut.bin"
    p.write_bytes(bytes(7))
    with pytest.raises(DataError, match="cut.bin.*5-byte"):
        read_nmnist_bin(str(p))
    q = tmp_path / "big.bin"
    q.write_bytes(bytes([40, 1, 0, 0, 1]))
    with pytest.raises(DataError, match="big.bin.*outside the 34 x 34 sensor"):
        read_nmnist_bin(str(q))
    with pytest.raises(DataError, match="missing.bin"):
        read_nmnist_bin(str(tmp_path / "missing.bin"))


def test_frames_bin_by_time_and_polarity(tmp_path):
    p = tmp_path / "b.bin"
    # ON at t=0 (bin 0), OFF at t=500 (bin 1 of 2 over 0..999), ON twice at the end (last bin)
    _write(str(p), [(1, 2, 1, 0), (4, 3, 0, 500), (6, 7, 1, 999), (6, 7, 1, 999)])
    fr = events_to_frames(read_nmnist_bin(str(p)), time_steps=2)
    assert fr.shape == (2, 2, 34, 34)
    assert fr[0, 0, 2, 1] == 1 and fr[1, 1, 3, 4] == 1 and fr[1, 0, 7, 6] == 1
    assert fr.sum() == 3  # binary: the repeated event counts once
    assert events_to_frames(read_nmnist_bin(str(p)), 2, binary=False)[1, 0, 7, 6] == 2


def test_load_folder_layout(tmp_path):
    for split, n in (("Train", 3), ("Test", 2)):
        for label in (0, 7):
            for i in range(n):
                _write(str(tmp_path / split / str(label) / f"{i:05d}.bin"), [(label, i, 1, 10 * i), (0, 0, 0, 100)])
    ds = load_nmnist(str(tmp_path), time_steps=4)
    assert ds.x_train.shape == (6, 4, 2, 34, 34) and ds.x_test.shape == (4, 4, 2, 34, 34)
    assert sorted(ds.y_train.tolist()) == [0, 0, 0, 7, 7, 7] and ds.n_classes == 8
    assert load_nmnist(str(tmp_path), time_steps=4, per_class=1).x_train.shape[0] == 2
    with pytest.raises(DataError, match="no Train/ folder"):
        load_nmnist(str(tmp_path / "Test"))
