import numpy as np
import pytest

from dpap_deploy.data import load_digits, load_npz, rate_encode
from dpap_deploy.errors import DataError


def test_digits_split_is_real_and_fixed(digits):
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
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


def test_user_npz_is_read_flattened_and_scaled(tmp_path, digits):
    p = tmp_path / "d.npz"
    np.savez(p, x=(digits.x_train[:200] * 255).reshape(200, 8, 8), y=digits.y_train[:200])
    ds = load_npz(str(p))
    assert ds.x_train.shape[1] == 64 and ds.x_train.max() <= 1.0
    assert len(ds.y_train) + len(ds.y_test) == 200


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.ones((10, 4))}, "needs 'x'"),
    ({"x": np.ones((10, 4)), "y": np.zeros(9, int)}, "10 samples but 'y' has 9"),
    ({"x": np.full((10, 4), np.nan), "y": np.arange(10) % 2}, "NaN"),
    ({"x": np.ones((10, 4)), "y": np.arange(10) % 2 - 1}, "label -1 is out of range"),
    ({"x": np.ones((10, 4)), "y": np.full(10, 0.5)}, "integer class labels"),
    ({"x": -np.ones((10, 4)), "y": np.arange(10) % 2}, "negative"),
])
def test_bad_user_npz_gets_a_clear_error(tmp_path, arrays, message):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=message) as e:
        load_npz(str(p))
    assert "bad.npz" in str(e.value)


def test_missing_or_foreign_data_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_npz(str(tmp_path / "nope.npz"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(str(junk))
