import numpy as np
import pytest

from masklab.pretrain.data.permutation import FeistelPermutation


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 65, 1000, 4099, 65537])
def test_bijective_on_every_size(n):
    p = FeistelPermutation(n, seed=3, epoch=1)(np.arange(n))
    assert p.dtype == np.int64 and np.array_equal(np.sort(p), np.arange(n))


def test_keyed_by_seed_and_epoch_and_random_access():
    n = 10_000
    a = FeistelPermutation(n, 0, 0)(np.arange(n))
    assert not np.array_equal(a, FeistelPermutation(n, 0, 1)(np.arange(n)))
    assert not np.array_equal(a, FeistelPermutation(n, 1, 0)(np.arange(n)))
    assert np.array_equal(a, FeistelPermutation(n, 0, 0)(np.arange(n)))  # a fresh process: same order
    k = np.array([9999, 5, 1234, 5])
    assert np.array_equal(FeistelPermutation(n, 0, 0)(k), a[k])
    # shuffled, not a shift: neighbours land far apart
    assert np.abs(np.diff(a)).mean() > n / 10


def test_empty_range_is_an_error():
    with pytest.raises(ValueError):
        FeistelPermutation(0, 0, 0)
