"""Event data through tonic: ``nmnist:ROOT`` (tonic's reader and ToFrame) in both layouts,
``tonic:NAME:ROOT`` on the files tonic's own check wants, every refusal with the file or folder
named, and no network access anywhere (sockets and tonic's download helpers fail loudly).

Recordings are written byte by byte in the 5-byte ATIS format (Orchard et al. 2015); the expected
frames are computed here from the same events with tonic's ``ToFrame``, not read back through
the code under test."""
import os
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import tonic
import tonic.dataset
import tonic.download_utils

from dpap_deploy.data import DataRequest, load_data
from dpap_deploy.data.nmnist import load_nmnist
from dpap_deploy.data.tonic_source import check_fits_in_memory, offline_class
from dpap_deploy.errors import DataError

SENSOR = (34, 34, 2)  # tonic's (W, H, P)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection or tonic download is recorded and fails (tests assert none happened)."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args[:2])
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    for mod, name in ((tonic.download_utils, "download_url"), (tonic.download_utils, "download_and_extract_archive"),
                      (tonic.download_utils, "_urlretrieve"), (tonic.download_utils, "extract_archive"),
                      (tonic.dataset, "download_and_extract_archive")):
        monkeypatch.setattr(mod, name, refuse)
    yield calls
    assert not calls, f"network or download calls: {calls}"


def _pack(rows):
    """rows of (x, y, p, t) packed by hand into 5-byte ATIS events."""
    data = bytearray()
    for x, y, p, t in rows:
        data += bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(data)


def _write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(_pack(rows))


def _rows(rng, label, n=80):
    """One recording: events around a label-dependent spot over ~300 ms (microseconds), in time
    order, with one event repeated (a count of two in one pixel and step)."""
    t = np.sort(rng.integers(0, 300_000, n))
    x = np.clip(rng.normal(6 + 10 * label, 3, n).round(), 0, 33).astype(int)
    y = np.clip(rng.normal(17, 6, n).round(), 0, 33).astype(int)
    p = rng.integers(0, 2, n)
    rows = [(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(x, y, p, t)]
    return rows[: n // 2] + [rows[n // 2]] + rows[n // 2:]


def _expected(rows, time_steps, sensor=SENSOR):
    """tonic's ToFrame on the events of ``rows``, clipped to one per step: (T, P, H, W)."""
    ev = np.zeros(len(rows), dtype=tonic.datasets.NMNIST.dtype)
    for f, k in (("x", 0), ("y", 1), ("p", 2), ("t", 3)):
        ev[f] = [r[k] for r in rows]
    return np.minimum(tonic.transforms.ToFrame(sensor_size=sensor, n_time_bins=time_steps)(ev), 1).astype(np.float32)


def _fake_nmnist(base, classes=(0, 1, 2), n_train=4, n_test=2, seed=0):
    """``base/Train/<label>/NNNNN.bin`` and ``base/Test/...``; returns {split: [(label, rows)]} in file order."""
    rng = np.random.default_rng(seed)
    recs = {}
    for split, n in (("Train", n_train), ("Test", n_test)):
        recs[split] = []
        for label in classes:
            for i in range(n):
                rows = _rows(rng, label)
                _write(os.path.join(base, split, str(label), f"{i:05d}.bin"), rows)
                recs[split].append((label, rows))
    return recs


@pytest.mark.parametrize("layout", ["", "NMNIST"], ids=["archives", "tonic-cache"])
def test_nmnist_frames_are_tonics_toframe_clipped(tmp_path, layout):
    recs = _fake_nmnist(os.path.join(tmp_path, layout))
    ds = load_data(f"nmnist:{tmp_path}", DataRequest(time_steps=6))
    assert ds.kind == "frames" and ds.name == "n-mnist" and ds.n_classes == 3
    assert ds.x_train.shape == (12, 6, 2, 34, 34) and ds.x_test.shape == (6, 6, 2, 34, 34)
    assert ds.x_train.dtype == np.float32 and set(np.unique(ds.x_train)) <= {0.0, 1.0}
    for split, x, y in (("Train", ds.x_train, ds.y_train), ("Test", ds.x_test, ds.y_test)):
        np.testing.assert_array_equal(x, np.stack([_expected(rows, 6) for _, rows in recs[split]]))
        assert y.tolist() == [label for label, _ in recs[split]] and y.dtype == np.int64
    assert any("clipped to one spike per step" in n and "Train" in n for n in ds.notes)
    assert any("ToFrame(n_time_bins=6)" in n and "left out" in n for n in ds.notes)
    assert load_data(f"nmnist:{tmp_path}").time_steps == 20  # the default T


def test_channels_are_tonics_off_then_on_rows_y_columns_x(tmp_path):
    # ON at (x=3, y=5), OFF at (x=10, y=20), both in bin 0 of 2 (bins 500 us wide); the last event is left out
    for split in ("Train", "Test"):
        for label in (0, 1):
            _write(str(tmp_path / split / str(label) / "a.bin"), [(3, 5, 1, 0), (10, 20, 0, 100), (0, 0, 1, 1000)])
    fr = load_nmnist(str(tmp_path), time_steps=2).x_train[0]
    assert fr[0, 1, 5, 3] == 1 and fr[0, 0, 20, 10] == 1 and fr.sum() == 2


def test_per_class_from_the_spec_and_the_function(tmp_path):
    _fake_nmnist(str(tmp_path))
    ds = load_data(f"nmnist:{tmp_path}?per_class=2", DataRequest(time_steps=3))
    assert ds.x_train.shape[0] == 6 and ds.x_test.shape[0] == 6
    assert load_nmnist(str(tmp_path), time_steps=3, per_class=1).x_train.shape == (3, 3, 2, 34, 34)
    with pytest.raises(DataError, match=r"unknown option 'per_klass=2'.*\?per_class=N"):
        load_data(f"nmnist:{tmp_path}?per_klass=2")
    with pytest.raises(DataError, match="whole number >= 1, got '0'"):
        load_data(f"nmnist:{tmp_path}?per_class=0")


def test_nmnist_refusals_name_the_file_or_folder(tmp_path):
    _fake_nmnist(str(tmp_path), n_train=2, n_test=2)
    cut = tmp_path / "Train" / "1" / "cut.bin"
    cut.write_bytes(_pack([(1, 1, 1, 5)]) + bytes(2))
    with pytest.raises(DataError, match=r"cut.bin: 7 bytes is not a whole number of 5-byte ATIS events"):
        load_data(f"nmnist:{tmp_path}")
    cut.unlink()
    big = tmp_path / "Test" / "2" / "big.bin"
    big.write_bytes(_pack([(1, 1, 1, 5), (40, 1, 0, 9)]))
    with pytest.raises(DataError, match=r"big.bin: event address \(x up to 40.*outside the 34 x 34 sensor"):
        load_data(f"nmnist:{tmp_path}")
    big.unlink()
    os.rename(tmp_path / "Test", tmp_path / "Tst")
    with pytest.raises(DataError, match=f"{tmp_path}: no Test/ folder"):
        load_data(f"nmnist:{tmp_path}")
    with pytest.raises(DataError, match=r"no Train/ folder .*NMNIST/Train"):
        load_data(f"nmnist:{tmp_path / 'Tst'}")
    with pytest.raises(DataError, match="nowhere: no such folder"):
        load_data(f"nmnist:{tmp_path / 'nowhere'}")


# ---- tonic:NAME:ROOT ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tonic_nmnist(tmp_path_factory):
    """ROOT/NMNIST as tonic's NMNIST check wants it: train.zip and test.zip present and at least
    10000 .bin files under Train/ and Test/ (three real recordings per class, the rest empty)."""
    root = tmp_path_factory.mktemp("tonic-root")
    base = root / "NMNIST"
    rng = np.random.default_rng(1)
    recs = {}
    for split in ("Train", "Test"):
        recs[split] = []
        for label in range(10):
            folder = base / split / str(label)
            folder.mkdir(parents=True)
            for i in range(3):
                rows = _rows(rng, label % 3)
                (folder / f"{i:05d}.bin").write_bytes(_pack(rows))
                recs[split].append((label, rows))
            for i in range(3, 1000):
                (folder / f"{i:05d}.bin").touch()
    (base / "train.zip").touch()
    (base / "test.zip").touch()
    return root, recs


def test_tonic_nmnist_reads_the_files_tonic_checks(tonic_nmnist):
    root, recs = tonic_nmnist
    ds = load_data(f"tonic:NMNIST:{root}?per_class=3", DataRequest(time_steps=4))
    assert ds.name == "tonic-NMNIST" and ds.kind == "frames" and ds.n_classes == 10
    assert ds.x_train.shape == (30, 4, 2, 34, 34) and ds.x_test.shape == (30, 4, 2, 34, 34)
    for split, x, y in (("Train", ds.x_train, ds.y_train), ("Test", ds.x_test, ds.y_test)):
        np.testing.assert_array_equal(x, np.stack([_expected(rows, 4) for _, rows in recs[split]]))
        assert y.tolist() == [label for label, _ in recs[split]]
    assert any("clipped to one spike per step" in n for n in ds.notes)
    # the same files through nmnist:ROOT (tonic's cache layout) give the same frames
    same = load_data(f"nmnist:{root}?per_class=3", DataRequest(time_steps=4))
    np.testing.assert_array_equal(same.x_test, ds.x_test)
    assert offline_class("nmnist").__name__ == "NMNIST"  # any case; tonic's folder is the class name


def test_tonic_missing_files_are_named_and_nothing_downloads(tonic_nmnist, tmp_path):
    root, _ = tonic_nmnist
    zip_ = root / "NMNIST" / "test.zip"
    os.rename(zip_, str(zip_) + ".away")
    try:
        with pytest.raises(DataError, match=r"tonic:NMNIST: the data is not under .*NMNIST: .*test.zip \(missing\)"):
            load_data(f"tonic:NMNIST:{root}?per_class=1")
    finally:
        os.rename(str(zip_) + ".away", zip_)
    with pytest.raises(DataError, match=r"train.zip \(missing\) and at least 10000 .bin files under .*Train \(found 0\)"):
        load_data(f"tonic:NMNIST:{tmp_path}")
    assert os.listdir(tmp_path) == []  # tonic wrote nothing either
    _fake_nmnist(str(tmp_path / "NMNIST"), n_train=4, n_test=1)
    (tmp_path / "NMNIST" / "train.zip").touch()
    with pytest.raises(DataError, match=r"train.zip \(present\) and at least 10000 .bin files under .*Train \(found 12\)"):
        load_data(f"tonic:NMNIST:{tmp_path}")
    with pytest.raises(DataError, match="is not a folder"):
        load_data(f"tonic:NMNIST:{tmp_path / 'nowhere'}")


def test_tonic_unknown_names_and_bad_specs_are_refused():
    with pytest.raises(DataError, match=r"tonic:MNISTX: not an event-camera classification set.*DVSGesture.*NMNIST.*POKERDVS"):
        load_data("tonic:MNISTX:/tmp")
    with pytest.raises(DataError, match=r"tonic:SHD: not an event-camera.*other sets.*SHD"):
        load_data("tonic:SHD:/tmp")
    with pytest.raises(DataError, match="needs a tonic data set name and the folder"):
        load_data("tonic:NMNIST")


def _npy_events(rng, n, sensor=35):
    """POKERDVS-style (E, 4) events, columns t (microseconds), x, y, p, in time order."""
    t = np.sort(rng.integers(0, 50_000, n))
    return np.c_[t, rng.integers(0, sensor, n), rng.integers(0, sensor, n), rng.integers(0, 2, n)].astype(np.int64)


def test_tonic_pokerdvs_has_its_own_split_and_never_fetches(tmp_path):
    rng = np.random.default_rng(2)
    base = tmp_path / "POKERDVS"
    kept = {}
    for split in ("pips_train", "pips_test"):
        for suit in ("cl", "he", "di", "sp"):
            (base / split / suit).mkdir(parents=True)
            for i in range(5):
                ev = _npy_events(rng, 40)
                np.save(base / split / suit / f"{i}.npy", ev)
                kept[(split, suit, i)] = ev
    with pytest.raises(DataError, match=r"tonic:POKERDVS: the data is not under .*pips_train.tar.gz \(missing\)"):
        load_data(f"tonic:POKERDVS:{tmp_path}")
    assert sorted(os.listdir(base)) == ["pips_test", "pips_train"]  # tonic copied no archive in
    (base / "pips_train.tar.gz").touch()
    (base / "pips_test.tar.gz").touch()
    ds = load_data(f"tonic:pokerdvs:{tmp_path}", DataRequest(time_steps=3))
    assert ds.x_train.shape == (20, 3, 2, 35, 35) and ds.x_test.shape == (20, 3, 2, 35, 35)
    assert ds.n_classes == 4 and sorted(set(ds.y_train.tolist())) == [0, 1, 2, 3]  # tonic's cl, he, di, sp
    ev = kept[("pips_train", "cl", 0)]
    rows = [(int(x), int(y), int(p), int(t)) for t, x, y, p in ev]
    np.testing.assert_array_equal(ds.x_train[0], _expected(rows, 3, (35, 35, 2)))


@pytest.fixture(scope="module")
def tonic_caltech(tmp_path_factory):
    """ROOT/NCALTECH101 as tonic's check wants it (the archive and 8709 .bin files): three classes
    named by folder, five real recordings each of a different size, the rest empty."""
    root = tmp_path_factory.mktemp("caltech-root")
    base = root / "NCALTECH101"
    rng = np.random.default_rng(3)
    sizes = {"airplanes": (50, 30), "butterfly": (40, 44), "cup": (20, 20)}
    for c, (w, h) in sizes.items():
        (base / "Caltech101" / c).mkdir(parents=True)
        for i in range(5):
            n = 60
            rows = [(int(x), int(y), int(p), int(t)) for x, y, p, t in zip(
                rng.integers(5, 5 + w, n), rng.integers(7, 7 + h, n), rng.integers(0, 2, n),
                np.sort(rng.integers(0, 100_000, n)))]
            (base / "Caltech101" / c / f"{i:04d}.bin").write_bytes(_pack(rows))
        for i in range(2903):
            (base / "Caltech101" / c / f"z{i:04d}.bin").touch()
    (base / "N-Caltech101-archive.zip").touch()
    return root, sizes


def test_tonic_set_without_a_split_is_split_here_and_labels_renumbered(tonic_caltech):
    root, sizes = tonic_caltech
    ds = load_data(f"tonic:NCALTECH101:{root}?per_class=5", DataRequest(time_steps=2, seed=0, test_fraction=0.2))
    assert ds.n_classes == 3 and ds.x_train.shape[0] == 12 and ds.x_test.shape[0] == 3
    w = max(s[0] for s in sizes.values())
    h = max(s[1] for s in sizes.values())
    assert ds.x_train.shape[1:] == (2, 2, h, w)  # the largest recording, tonic's x/y shifted to 0
    assert sorted(ds.y_test.tolist()) == [0, 1, 2]  # stratified
    assert any("airplanes->0, butterfly->1, cup->2" in n for n in ds.notes)
    assert any("differ in size" in n for n in ds.notes)


def test_memory_guard_says_how_to_read_less():
    with pytest.raises(DataError, match=r"GiB.*\?per_class=N"):
        check_fits_in_memory(10**7, 100, (2, 128, 128), "big")
    check_fits_in_memory(10, 20, (2, 34, 34), "small")


def test_tonic_is_imported_only_when_used():
    code = ("import sys, dpap_deploy.data as d; d.SOURCES.names(); d.resolve('nmnist:/x'); "
            "assert 'tonic' not in sys.modules, 'tonic imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True)
