"""Helpers shared by both models' fit: input checks, batches, schedules."""

import numpy as np
import numpy.testing as npt
import pytest

pytest.importorskip("keras")

from dipy_ext.nn.training import (  # noqa: E402
    ArrayBatches,
    as_volume_batch,
    keras_verbosity,
    learning_rate_schedule,
)


def test_as_volume_batch_shapes_and_errors():
    one = np.zeros((4, 4, 4))
    batch, single = as_volume_batch(one, (4, 4, 4))
    assert single and batch.shape == (1, 4, 4, 4) and batch.dtype == np.float32
    batch, single = as_volume_batch([one, one], (4, 4, 4))
    assert not single and batch.shape == (2, 4, 4, 4)
    batch, _ = as_volume_batch(np.zeros((3, 4, 4, 4, 1)), (4, 4, 4))
    assert batch.shape == (3, 4, 4, 4)
    with pytest.raises(ValueError, match=r"should have shape \(4, 4, 4\)"):
        as_volume_batch(np.zeros((2, 4, 4, 5)), (4, 4, 4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        as_volume_batch(np.full((4, 4, 4), np.inf), (4, 4, 4))


def test_array_batches_cover_every_item_once_per_epoch():
    data = np.arange(5)[:, None, None, None] * np.ones((5, 2, 2, 2), np.float32)
    batches = ArrayBatches(data, 2, seed=0)
    assert len(batches) == 3
    seen = np.concatenate([batches[i][0][:, 0, 0, 0, 0] for i in range(len(batches))])
    assert sorted(seen) == [0, 1, 2, 3, 4]
    x, y = batches[0]
    assert x.shape[1:] == (2, 2, 2, 1)
    npt.assert_array_equal(x, y)  # auto-encoding target


def test_array_batches_conditions_and_no_target():
    latents = np.random.default_rng(0).random((4, 2, 2, 2, 3)).astype(np.float32)
    cond = np.arange(8, dtype=np.float32).reshape(4, 2)
    (x,) = ArrayBatches(latents, 4, shuffle=False, conditions=cond, targets=False)[0]
    npt.assert_array_equal(x[0], latents)  # channel axis kept as is
    npt.assert_array_equal(x[1], cond)


def test_patches_are_aligned_and_favour_brain():
    data = np.zeros((1, 16, 16, 16), np.float32)
    data[0, 8:, 8:, 8:] = 1.0  # "brain" in one corner
    batches = ArrayBatches(
        data, 1, seed=0, patch_shape=(8, 8, 8), patch_multiple=4, patch_candidates=8
    )
    filled = [batches[0][0].mean() for _ in range(20)]
    # offsets are multiples of 4, so a crop holds 0, 1/8, 1/4, 1/2 or all brain
    assert set(np.round(filled, 4)) <= {0.0, 0.125, 0.25, 0.5, 1.0}
    assert np.mean(filled) > 0.5  # the best of 8 candidates is mostly brain


def test_learning_rate_schedule_warms_up_then_decays():
    schedule = learning_rate_schedule(1e-3, 1000)
    lr = [float(schedule(s)) for s in (0, 50, 100, 500, 999)]
    assert lr[0] == 0.0 and lr[1] == pytest.approx(5e-4, rel=1e-3)
    assert lr[2] == pytest.approx(1e-3, rel=1e-3)
    assert lr[2] > lr[3] > lr[4] >= 1e-5 * 0.99


def test_keras_verbosity():
    assert keras_verbosity(False) == 0
    assert keras_verbosity(True) in (1, 2)


def test_half_precision_keeps_what_float16_cannot_hold(tmp_path):
    """A counter past 65504 (a quantizer's code usage) would become inf in
    float16: it is stored as float32, the weights as float16."""
    from dipy_ext.nn.model_file import load_model_file, save_model_file

    weights = {"net": [np.full(3, 0.5, np.float32), np.array([1e6, 1.0], np.float32)]}
    path = save_model_file(
        tmp_path / "m.npz", kind="test", meta={}, weights=weights, half_precision=True
    )
    _, loaded = load_model_file(path, kind="test")
    small, counter = (np.asarray(a) for a in loaded["net"])
    npt.assert_array_equal(small, weights["net"][0])
    npt.assert_array_equal(counter, weights["net"][1])
    with np.load(path) as raw:
        assert raw["net/0000"].dtype == np.float16
        assert raw["net/0001"].dtype == np.float32
