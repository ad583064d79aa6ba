import numpy as np
import numpy.testing as npt
import pytest

keras = pytest.importorskip("keras")

from dipy_ext.nn.quantizer import (  # noqa: E402
    CodebookUsage,
    VectorQuantizer,
    usage_and_perplexity,
)


def _quantizer(k=4, d=2, **kw):
    q = VectorQuantizer(k, d, seed=0, **kw)
    q.build((None, d))
    return q


def test_nearest_code_and_straight_through():
    q = _quantizer()
    codes = np.array([[0, 0], [1, 0], [0, 1], [5, 5]], np.float32)
    q.embeddings.assign(codes)
    z = np.array([[[[[0.9, 0.1], [0.1, 0.8], [4.0, 6.0]]]]], np.float32)
    quantized, idx = q(z)
    npt.assert_array_equal(keras.ops.convert_to_numpy(idx).ravel(), [1, 2, 3])
    npt.assert_allclose(
        keras.ops.convert_to_numpy(quantized)[0, 0, 0], codes[[1, 2, 3]]
    )
    # commitment loss: 0.25 * mean squared distance to the chosen codes
    expected = 0.25 * np.mean((codes[[1, 2, 3]] - z[0, 0, 0]) ** 2)
    npt.assert_allclose(
        float(keras.ops.convert_to_numpy(q.losses[0])), expected, rtol=1e-5
    )


def test_ema_moves_codes_to_cluster_means():
    """Two clusters, two live codes: the EMA codebook converges to the means."""
    rng = np.random.default_rng(0)
    q = _quantizer(k=2, d=2, decay=0.8, dead_code_threshold=0.0)
    q.embeddings.assign(np.array([[0.5, 0.5], [2.5, 2.5]], np.float32))
    q.ema_count.assign(np.ones(2, np.float32))
    q.ema_sum.assign(np.array([[0.5, 0.5], [2.5, 2.5]], np.float32))
    for _ in range(60):
        a = rng.normal([0, 0], 0.1, (50, 2))
        b = rng.normal([3, 3], 0.1, (50, 2))
        q(np.concatenate([a, b]).astype(np.float32)[None, None, None], training=True)
    npt.assert_allclose(np.asarray(q.embeddings), [[0, 0], [3, 3]], atol=0.05)


def test_dead_codes_restart_on_data():
    """Codes far from all data are moved onto data vectors."""
    q = _quantizer(k=8, d=2)
    q.embeddings.assign(np.full((8, 2), 100.0, np.float32))
    data = np.random.default_rng(1).normal(0, 1, (1, 1, 1, 256, 2)).astype(np.float32)
    q(data, training=True)
    codes = np.asarray(q.embeddings)
    assert np.abs(codes).max() < 10  # every code now lies among the data
    usage, _ = usage_and_perplexity(
        np.bincount(np.asarray(q(data)[1]).ravel(), minlength=8)
    )
    assert usage > 0.5


def test_usage_and_perplexity():
    assert usage_and_perplexity([0, 0, 0, 0]) == (0.0, 0.0)
    usage, perp = usage_and_perplexity([5, 5, 0, 0])
    assert usage == 0.5
    npt.assert_allclose(perp, 2.0)


def test_usage_callback_resets_each_epoch():
    q = _quantizer()
    q.usage_count.assign(np.array([3, 0, 1, 0], np.float32))
    cb = CodebookUsage(q)
    logs = {}
    cb.on_epoch_end(0, logs)
    assert logs["codebook_usage"] == 0.5
    cb.on_epoch_begin(1)
    npt.assert_array_equal(np.asarray(q.usage_count), 0)
