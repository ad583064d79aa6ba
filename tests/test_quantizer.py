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


# --- the seam: FSQ, residual VQ, and a quantizer added by one class ---------
from dipy_ext.nn.quantizer import (  # noqa: E402
    QUANTIZERS,
    FiniteScalarQuantizer,
    Quantizer,
    ResidualVectorQuantizer,
    make_quantizer,
    register_quantizer,
)


def test_fsq_rounds_each_channel_to_its_levels():
    q = make_quantizer({"kind": "fsq", "levels": [8, 5, 3]})
    assert (q.embedding_dim, q.num_codes) == (3, 120)
    z = np.random.default_rng(0).normal(0, 3, (1, 4, 4, 4, 3)).astype(np.float32)
    quantized, idx = (keras.ops.convert_to_numpy(t) for t in q(z))
    for c, levels in enumerate((8, 5, 3)):
        values = np.unique(quantized[..., c])
        assert len(values) <= levels and np.abs(values).max() <= 1.0
    # the numpy side agrees with the network: same codes, same vectors
    npt.assert_array_equal(q.codes(quantized), idx)
    npt.assert_allclose(q.code_vectors(idx), quantized, atol=1e-6)
    npt.assert_allclose(q.snap(quantized + 0.01), quantized, atol=1e-6)
    every = q.code_vectors(np.arange(q.num_codes))
    assert len(np.unique(every, axis=0)) == 120  # every index its own vector
    npt.assert_array_equal(q.codes(every), np.arange(120))


def test_fsq_passes_gradients_straight_through():
    import tensorflow as tf

    q = make_quantizer({"kind": "fsq", "levels": [8, 8]})
    z = tf.Variable(np.full((1, 1, 1, 1, 2), 0.3, np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(q(z)[0])
    grad = tape.gradient(loss, z).numpy()
    assert np.all(grad > 0)  # d tanh bound / dz, not zero as rounding alone


def test_residual_stages_reduce_the_error():
    rng = np.random.default_rng(0)
    data = rng.normal(0, 1, (1, 1, 1, 512, 4)).astype(np.float32)
    errors = []
    for stages in (1, 3):
        q = make_quantizer(
            {"kind": "rvq", "num_embeddings": 16, "embedding_dim": 4, "stages": stages},
            seed=0,
        )
        for _ in range(20):
            q(data, training=True)
        idx = q.codes(data)
        assert idx.shape == (1, 1, 1, 512, stages)
        npt.assert_allclose(q.code_vectors(idx), q.snap(data), atol=1e-5)
        errors.append(np.mean((q.snap(data) - data) ** 2))
    assert errors[1] < 0.6 * errors[0]


def test_unknown_kind_and_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match="quantizer kind should be one of"):
        make_quantizer({"kind": "lfq"})
    with pytest.raises(ValueError, match="bad options for the 'fsq' quantizer"):
        make_quantizer({"kind": "fsq", "codes": 3})
    with pytest.raises(ValueError, match="levels should be ints >= 2"):
        make_quantizer({"kind": "fsq", "levels": [8, 1]})
    with pytest.raises(ValueError, match="num_embeddings should be an integer"):
        make_quantizer({"kind": "vq", "num_embeddings": 0, "embedding_dim": 4})


def test_a_new_quantizer_is_one_class(tmp_path):
    """Sign quantization, written against the interface alone, trains,
    encodes, decodes and saves through VQVAE3D."""
    from dipy_ext.nn.vqvae import VQVAE3D

    @register_quantizer("sign_test")
    class SignQuantizer(Quantizer):
        def __init__(self, bits=3, *, seed=None, **kwargs):
            super().__init__(seed=seed, **kwargs)
            self.bits = self.embedding_dim = bits
            self.num_codes, self.index_channels = 2**bits, 1

        def build(self, input_shape):
            self.build_usage()

        def call(self, z, training=False):
            z = keras.ops.cast(z, "float32")
            q = z + keras.ops.stop_gradient(keras.ops.sign(z) - z)
            idx = keras.ops.sum(
                keras.ops.cast(z > 0, "int32") * (2 ** np.arange(self.bits)), -1
            )
            if training:
                self.count_usage(idx)
            return q, idx

        def codes(self, latents):
            return ((np.asarray(latents) > 0) * 2 ** np.arange(self.bits)).sum(-1)

        def code_vectors(self, indices):
            bits = (np.asarray(indices)[..., None] >> np.arange(self.bits)) & 1
            return (2.0 * bits - 1).astype(np.float32)

        def spec(self):
            return {"kind": self.kind, "bits": self.bits}

    try:
        vq = VQVAE3D(
            input_shape=(16, 16, 16),
            channels=(4, 8),
            seed=0,
            quantizer={"kind": "sign_test", "bits": 3},
            verbose=False,
        )
        x = np.random.default_rng(0).random((4, 16, 16, 16)).astype(np.float32)
        history = vq.fit(x, epochs=1, batch_size=2)
        assert 0 < history.history["codebook_usage"][0] <= 1
        assert vq.encode(x).shape == (4, 4, 4, 4, 3)
        vq.save(tmp_path / "sign.npz")
        again = VQVAE3D.load(tmp_path / "sign.npz")
        assert again.quantizer.kind == "sign_test"
        npt.assert_array_equal(again.encode(x), vq.encode(x))
    finally:
        QUANTIZERS.pop("sign_test")


def test_classes_are_registered():
    assert QUANTIZERS["fsq"] is FiniteScalarQuantizer
    assert QUANTIZERS["rvq"] is ResidualVectorQuantizer
    assert QUANTIZERS["vq"] is VectorQuantizer


def test_every_restarted_code_is_an_encoder_output():
    """Issue 19: a restarted code is one of the batch's vectors, never a mix."""
    q = _quantizer(k=8, d=2)
    q.embeddings.assign(np.full((8, 2), 100.0, np.float32))  # all dead
    data = np.random.default_rng(2).normal(0, 1, (1, 1, 1, 64, 2)).astype(np.float32)
    q(data, training=True)
    vectors = data.reshape(-1, 2)
    for code in np.asarray(q.embeddings):
        assert np.min(np.abs(vectors - code).max(axis=1)) < 1e-6
