import numpy as np
import pytest

from dpap_deploy.errors import DataError
from dpap_deploy.data.event_digits import DVSConfig, bin_events, load_event_digits, make_event_digits, record_events, saccade_path


def test_saccades_form_a_closed_triangle():
    cfg = DVSConfig(margin=2, substeps=10)
    p = saccade_path(cfg)
    assert p.shape == (31, 2)
    np.testing.assert_allclose(p[0], p[-1])
    np.testing.assert_allclose(p[[10, 20]], [[2, 2], [-2, 2]])


def test_a_moving_digit_gives_on_and_off_events_at_its_edges(digits):
    from sklearn.datasets import load_digits

    img = load_digits().images[0] / 16.0
    ev = record_events(img, DVSConfig(), np.random.default_rng(0))
    assert len(ev) > 500
    assert (ev[:, 1] == 0).sum() > 100 and (ev[:, 1] == 1).sum() > 100
    S = DVSConfig().sensor_size
    assert ev[:, 2].min() >= 0 and ev[:, 2].max() < S and ev[:, 3].max() < S
    # every saccade produces events
    for s in range(3):
        assert ((ev[:, 0] > s * 30) & (ev[:, 0] <= (s + 1) * 30)).sum() > 50


def test_no_motion_or_blank_image_gives_no_events():
    rng = np.random.default_rng(0)
    assert len(record_events(np.zeros((8, 8)), DVSConfig(), rng)) == 0
    still = DVSConfig(margin=0)
    assert len(record_events(np.eye(8), still, rng)) == 0


def test_refractory_period_and_threshold_reduce_events():
    img = np.eye(8)
    n = lambda **kw: len(record_events(img, DVSConfig(**kw), np.random.default_rng(0)))
    assert n(refractory=5) < n(refractory=0)
    assert n(threshold=0.6) < n(threshold=0.2)


def test_binning_counts_and_binary_frames():
    ev = np.array([[1, 0, 2, 3], [1, 0, 2, 3], [90, 1, 0, 0]])
    f = bin_events(ev, n_updates=90, time_steps=3, size=4, binary=False)
    assert f.shape == (3, 2, 4, 4) and f[0, 0, 2, 3] == 2 and f[2, 1, 0, 0] == 1 and f.sum() == 3
    assert bin_events(ev, 90, 3, 4).max() == 1.0


def test_generator_is_deterministic_under_its_seed():
    from sklearn.datasets import load_digits

    imgs = load_digits().images[:6] / 16.0
    a = make_event_digits(imgs, 10, seed=1)
    np.testing.assert_array_equal(a, make_event_digits(imgs, 10, seed=1))
    assert not np.array_equal(a, make_event_digits(imgs, 10, seed=2))  # per-pixel threshold mismatch
    with pytest.raises(DataError, match="time steps must be >= 1"):
        make_event_digits(imgs, 0)


def test_event_dataset_shapes():
    ds = load_event_digits(time_steps=8, limit=100)
    assert ds.name == "event-digits" and ds.x_train.shape[1:] == (8, 2, 20, 20)
    assert len(ds.y_train) + len(ds.y_test) == 100
