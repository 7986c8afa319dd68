"""Data sources: bundled sets, a user's .npz of every shape, event-digits' cache, the encodings,
and every refusal with its message."""
import os

import numpy as np
import pytest

from dpap_deploy.data import DataRequest, SOURCES, load_data, load_digits, load_npz, rate_encode, resolve
from dpap_deploy.data.encoding import InputEncoder, current_encode
from dpap_deploy.errors import DataError


def test_digits_split_is_real_and_fixed(digits):
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
    assert digits.kind == "static" and digits.time_steps is None and digits.sample_shape == (64,)
    assert digits.n_classes == 10 and set(np.unique(digits.y_test)) == set(range(10))
    assert 0.0 <= digits.x_train.min() and digits.x_train.max() == 1.0
    again = load_digits()
    np.testing.assert_array_equal(again.y_test, digits.y_test)
    other = load_digits(seed=1)
    assert not np.array_equal(other.y_test, digits.y_test)


def test_rate_encoding_shape_rate_and_determinism(digits):
    x = digits.x_test[:50]
    s = rate_encode(x, 400, seed=3)
    assert s.shape == (400, 50, 64) and set(np.unique(s)) <= {0.0, 1.0}
    # spike probability per step equals intensity (binomial error with 400 draws < 0.1)
    assert np.abs(s.mean(0) - x).max() < 0.1
    np.testing.assert_array_equal(s, rate_encode(x, 400, seed=3))
    with pytest.raises(DataError, match="time steps must be >= 1"):
        rate_encode(x, 0, seed=0)


def test_current_encoding_repeats_the_analog_value(digits):
    x = digits.x_test[:5]
    c = current_encode(x, 7)
    assert c.shape == (7, 5, 64) and all(np.array_equal(c[t], x) for t in range(7))
    enc = InputEncoder("static", "current", 7)
    assert enc.analog and np.array_equal(enc(x, 0), c)
    assert not InputEncoder("static", "rate", 7).analog


def test_wine_is_scaled_per_feature_from_the_training_split():
    """wine's proline reaches 1680 while hue stays below 2: a global maximum would flatten every
    other column to ~0; per-feature scaling puts each column's training range on [0, 1]."""
    from sklearn.datasets import load_wine

    ds = load_data("wine", DataRequest(seed=0))
    raw = load_wine().data
    assert raw[:, 12].max() > 1000 and raw[:, 10].max() < 2  # proline, hue
    assert ds.kind == "static" and ds.n_classes == 3 and ds.x_train.shape[1] == 13
    np.testing.assert_allclose(ds.x_train.min(0), 0.0)
    np.testing.assert_allclose(ds.x_train.max(0), 1.0)
    assert ds.x_test.min() >= 0.0 and ds.x_test.max() <= 1.0  # test values clipped to the training range
    assert ds.x_train[:, 10].std() > 0.1  # hue is informative after scaling, not squashed to zero


def _npz(tmp_path, x, y, name="d.npz"):
    p = tmp_path / name
    np.savez(p, x=x, y=y)
    return str(p)


def test_static_npz_of_any_range_is_scaled_per_feature(tmp_path):
    rng = np.random.default_rng(0)
    x = np.c_[rng.uniform(-5, 1700, 60), rng.uniform(0, 0.01, 60), np.full(60, 3.0)]
    y = np.arange(60) % 3
    ds = load_npz(_npz(tmp_path, x, y))
    assert ds.kind == "static" and ds.x_train.shape == (48, 3)
    np.testing.assert_allclose(ds.x_train[:, :2].min(0), 0.0)
    np.testing.assert_allclose(ds.x_train[:, :2].max(0), 1.0)
    assert np.all(ds.x_train[:, 2] == 0.0)  # a constant feature carries nothing


def test_spike_trains_and_frames_are_used_as_they_are(tmp_path):
    rng = np.random.default_rng(1)
    y = np.arange(40) % 2
    spikes = (rng.random((40, 9, 5)) < 0.3).astype(np.uint8)
    ds = load_npz(_npz(tmp_path, spikes, y, "s.npz"))
    assert (ds.kind, ds.time_steps, ds.sample_shape, ds.n_features) == ("spikes", 9, (5,), 5)
    assert not ds.notes and set(np.unique(ds.x_train)) <= {0.0, 1.0}
    frames = rng.poisson(0.4, (40, 6, 2, 7, 5)).astype(np.int16)
    assert frames.max() > 1
    ds = load_npz(_npz(tmp_path, frames, y, "f.npz"))
    assert (ds.kind, ds.time_steps, ds.sample_shape) == ("frames", 6, (2, 7, 5))
    assert ds.x_train.max() == 1.0 and len(ds.notes) == 1
    over = int((frames > 1).sum())
    assert f"{over} of {frames.size} (pixel, step) entries held more than one event (up to {frames.max()})" in ds.notes[0]
    assert "clipped to one spike per step" in ds.notes[0]
    # the split keeps whole samples: each training frame is one of the file's, clipped
    clipped = np.minimum(frames, 1).astype(np.float32)
    assert any(np.array_equal(ds.x_train[0], f) for f in clipped)


@pytest.mark.parametrize("x,y,message", [
    (np.ones((10, 4)), np.zeros(10, int), "every sample has label 0; a classifier needs at least two classes"),
    (np.ones((10, 3, 4, 4)), np.arange(10) % 2, "'x' has shape (10, 3, 4, 4), which no model family takes"),
    (np.ones((10, 2, 2, 2, 2, 2)), np.arange(10) % 2, "which no model family takes; expected (N, F) static"),
    (-np.ones((10, 3, 4)), np.arange(10) % 2, "event counts must be >= 0, got -1"),
    (np.full((10, 3, 4), 0.5), np.arange(10) % 2, "event counts must be whole numbers, got 0.5"),
    (np.ones((10, 4)), np.arange(10) % 2 - 1, "label -1 is out of range"),
    (np.ones((10, 4)), np.full(10, 0.5), "integer class labels"),
    (np.full((10, 4), np.nan), np.arange(10) % 2, "NaN"),
    (np.ones((10, 4)), np.r_[np.zeros(9, int), 1], "class 1 has 1 samples"),
])
def test_bad_user_npz_gets_a_clear_error(tmp_path, x, y, message):
    p = _npz(tmp_path, x, y, "bad.npz")
    with pytest.raises(DataError) as e:
        load_npz(p)
    assert message in str(e.value) and "bad.npz" in str(e.value)


def test_missing_or_foreign_data_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_npz(str(tmp_path / "nope.npz"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(str(junk))


def test_sources_are_resolved_by_name_or_path(tmp_path):
    assert {"digits", "wine", "breast-cancer", "iris", "event-digits", "npz", "nmnist"} <= set(SOURCES.names())
    assert resolve("wine") == ("wine", None)
    assert resolve("nmnist:/data/nm") == ("nmnist", "/data/nm")
    assert resolve("x/y.npz") == ("npz", "x/y.npz")
    with pytest.raises(DataError, match="--data 'winery' is neither a file nor a known data source; known data "
                                        "sources: breast-cancer, digits"):
        resolve("winery")
    with pytest.raises(DataError, match="--data wine takes no argument"):
        load_data("wine:abc")


def test_event_digits_are_recorded_once_then_read_from_the_cache(tmp_path, monkeypatch):
    import dpap_deploy.data.event_digits as ev

    monkeypatch.setenv("DPAP_DEPLOY_CACHE", str(tmp_path / "cache"))
    calls = []
    real = ev.make_event_digits
    monkeypatch.setattr(ev, "make_event_digits", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = ev.load_event_digits(time_steps=5, limit=60)
    second = ev.load_event_digits(time_steps=5, limit=60)
    assert len(calls) == 1 and os.listdir(tmp_path / "cache")
    assert first.kind == "frames" and first.x_train.shape[1:] == (5, 2, 20, 20)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    ev.load_event_digits(time_steps=6, limit=60)  # another T is another recording
    assert len(calls) == 2
    monkeypatch.setenv("DPAP_DEPLOY_CACHE", "")  # no cache: recorded every time
    ev.load_event_digits(time_steps=5, limit=60)
    assert len(calls) == 3


def test_a_damaged_cache_file_is_recorded_again(tmp_path, monkeypatch):
    import dpap_deploy.data.event_digits as ev

    monkeypatch.setenv("DPAP_DEPLOY_CACHE", str(tmp_path))
    good = ev.load_event_digits(time_steps=4, limit=60)
    for f in os.listdir(tmp_path):
        (tmp_path / f).write_bytes(b"\x93NUMPY damaged")
    again = ev.load_event_digits(time_steps=4, limit=60)
    np.testing.assert_array_equal(good.x_train, again.x_train)
