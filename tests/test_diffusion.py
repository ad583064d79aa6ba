import numpy as np
import numpy.testing as npt
import pytest

pytest.importorskip("keras")

from dipy_ext.data import phantom_cohort  # noqa: E402
from dipy_ext.nn.diffusion import LatentDiffusion3D  # noqa: E402
from dipy_ext.nn.unet import build_unet  # noqa: E402
from dipy_ext.nn.vqvae import VQVAE3D  # noqa: E402

SHAPE = (16, 16, 16)


@pytest.fixture(scope="module")
def tiny_vq():
    vq = VQVAE3D(
        input_shape=SHAPE,
        channels=(8, 16),
        num_res_blocks=1,
        quantizer="vq",
        output_stage="subpixel",
        num_embeddings=16,
        embedding_dim=4,
        seed=0,
    )
    vq.fit(phantom_cohort(4, SHAPE, rng=0), epochs=1, batch_size=2)
    return vq


@pytest.fixture(scope="module")
def fitted(tiny_vq):
    """One trained unconditional model, its history and training volumes,
    shared by the tests that need *a* trained model."""
    ldm = tiny_ldm(tiny_vq)
    vols = phantom_cohort(4, SHAPE, rng=1)
    history = ldm.fit(vols, epochs=2, batch_size=2, ema_momentum=0.5)
    return ldm, history, vols


def tiny_ldm(vq, **kw):
    cfg = {
        "channels": (8, 16),
        "attention_levels": (False, True),
        "num_res_blocks": 1,
        "num_train_timesteps": 20,
        "seed": 0,
    }
    cfg.update(kw)
    return LatentDiffusion3D(vq, **cfg)


def test_unet_shapes_and_conditions():
    unet = build_unet(
        (8, 8, 8),
        4,
        channels=(8, 16, 16),
        attention_levels=(False, True, True),
        num_res_blocks=1,
        condition_dim=2,
    )
    x = np.random.default_rng(0).standard_normal((3, 8, 8, 8, 4)).astype(np.float32)
    t = np.array([0, 5, 9], np.float32)
    c = np.ones((3, 2), np.float32)
    out = unet.predict_on_batch([x, t, c, np.zeros(3, np.float32)])
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="divisible by 4"):
        build_unet((6, 6, 6), 4, channels=(8, 16, 16), attention_levels=(False,) * 3)
    with pytest.raises(ValueError, match="one per level"):
        build_unet((8, 8, 8), 4, channels=(8, 16), attention_levels=(False,))


def test_fit_predict_shapes_range_and_seed(fitted):
    ldm, history, vols = fitted
    assert np.isfinite(history.history["loss"]).all()
    assert ldm.scale_factor > 0
    # latents are normalised to unit variance
    z = ldm.encode(vols)
    npt.assert_allclose(z.std(), 1.0, rtol=0.3)
    a = ldm.predict(3, num_inference_steps=4, seed=7, batch_size=2, progress=False)
    assert a.shape == (3, *SHAPE) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    b = ldm.predict(3, num_inference_steps=4, seed=7, batch_size=2, progress=False)
    npt.assert_array_equal(a, b)
    c = ldm.predict(3, num_inference_steps=4, seed=8, batch_size=2, progress=False)
    assert np.abs(a - c).max() > 0
    d = ldm.predict(1, sampler="ddpm", seed=1, progress=False)
    assert d.shape == (1, *SHAPE)


@pytest.mark.slow
def test_save_load_roundtrip(tiny_vq, tmp_path):
    ldm = tiny_ldm(tiny_vq, condition_dim=2, condition_names=["age", "sex"])
    vols = phantom_cohort(4, SHAPE, rng=2)
    cond = np.array([[60, 0], [70, 1], [65, 0], [80, 1]], np.float32)
    with pytest.raises(ValueError, match="not trained"):
        ldm.save(tmp_path / "untrained.npz")
    ldm.fit(vols, conditions=cond, epochs=1, batch_size=2, ema_momentum=None)
    path = ldm.save(tmp_path / "ldm.npz")
    again = LatentDiffusion3D.load(path)
    assert again.get_config() == ldm.get_config()
    assert again.scale_factor == ldm.scale_factor
    kw = {
        "conditions": cond[:2],
        "num_inference_steps": 3,
        "seed": 3,
        "guidance_scale": 2.0,
        "progress": False,
    }
    npt.assert_array_equal(again.predict(2, **kw), ldm.predict(2, **kw))
    with pytest.raises(ValueError, match="holds a LatentDiffusion3D model"):
        VQVAE3D.load(path)


def test_bad_arguments(tiny_vq, fitted):
    with pytest.raises(ValueError, match="the autoencoder should offer input_shape"):
        LatentDiffusion3D("vqvae.npz")
    with pytest.raises(ValueError, match="condition_names"):
        tiny_ldm(tiny_vq, condition_dim=2, condition_names=["age"])
    with pytest.raises(ValueError, match="not trained"):
        tiny_ldm(tiny_vq).predict(1, progress=False)
    ldm = fitted[0]
    with pytest.raises(ValueError, match="num_samples should be an integer >= 1"):
        ldm.predict(0)
    with pytest.raises(ValueError, match="num_samples should be an integer >= 1"):
        ldm.predict(2.5)
    with pytest.raises(ValueError, match="unconditional"):
        ldm.predict(1, conditions=[[1.0]])
    with pytest.raises(ValueError, match="sampler"):
        ldm.predict(1, sampler="euler")
    with pytest.raises(ValueError, match="num_inference_steps"):
        ldm.predict(1, num_inference_steps=50)  # more than the 20 training steps
    with pytest.raises(ValueError, match="guidance_scale"):
        ldm.predict(1, guidance_scale=3.0)
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="eta should be a number from 0 to 1"):
            ldm.predict(1, num_inference_steps=5, eta=bad)
        with pytest.raises(ValueError, match="guidance_scale should be a finite"):
            ldm.predict(1, num_inference_steps=5, guidance_scale=bad)
    # every sampler runs through the one loop; deterministic ones repeat
    a = ldm.predict(2, num_inference_steps=5, sampler="dpm_solver", seed=1)
    b = ldm.predict(2, num_inference_steps=5, sampler="dpm_solver", seed=1)
    npt.assert_array_equal(a, b)
    assert a.shape == (2, *SHAPE) and np.isfinite(a).all()
    cond = tiny_ldm(tiny_vq, condition_dim=2)
    with pytest.raises(ValueError, match="needs conditions"):
        cond.fit(phantom_cohort(2, SHAPE, rng=3), epochs=1)
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        cond.fit(phantom_cohort(2, SHAPE, rng=3), conditions=np.ones((2, 3)), epochs=1)


@pytest.mark.slow
def test_any_first_stage_can_stand_in(tmp_path):
    """Issue 20: LatentDiffusion3D uses only the first-stage interface: a
    stand-in autoencoder with no network (4x block means, nearest-neighbour
    back) trains, samples, saves and loads with it."""
    from dipy_ext.nn.first_stage import FIRST_STAGES, register_first_stage

    @register_first_stage
    class BlockMeans:
        input_shape, latent_shape, embedding_dim = (16, 16, 16), (4, 4, 4), 1
        affine = np.diag([2.0, 2.0, 2.0, 1.0])

        def encode(self, volumes, *, batch_size=1):
            v = np.asarray(volumes, np.float32).reshape(-1, 4, 4, 4, 4, 4, 4)
            return v.mean(axis=(2, 4, 6))[..., None]

        def decode(self, latents, *, batch_size=1):
            z = np.asarray(latents, np.float32)[..., 0]
            return z.repeat(4, 1).repeat(4, 2).repeat(4, 3)

        def file_part(self):
            return {"block": 4}, []

        @classmethod
        def from_file_part(cls, meta, weights, *, source, mixed_precision=False):
            assert meta == {"block": 4} and weights == []
            return cls()

    try:
        volumes = phantom_cohort(4, (16, 16, 16), rng=0)
        ldm = LatentDiffusion3D(
            BlockMeans(),
            channels=(8, 16),
            attention_levels=(False, False),
            num_res_blocks=1,
            num_train_timesteps=20,
            seed=0,
            verbose=False,
        )
        ldm.fit(volumes, epochs=1, batch_size=2)
        samples = ldm.predict(2, num_inference_steps=5, seed=0, progress=False)
        assert samples.shape == (2, 16, 16, 16) and np.isfinite(samples).all()
        assert ldm.voxel_size == (2.0, 2.0, 2.0) and ldm.space is None
        ldm.save(tmp_path / "ldm.npz")
        again = LatentDiffusion3D.load(tmp_path / "ldm.npz")
        assert isinstance(again.vqvae, BlockMeans)
        npt.assert_array_equal(
            again.predict(2, num_inference_steps=5, seed=0, progress=False), samples
        )
    finally:
        FIRST_STAGES.pop("BlockMeans")
    with pytest.raises(ValueError, match="object lacks input_shape, affine"):
        LatentDiffusion3D(object())


def test_training_encodes_a_memory_map_without_copying_it(tiny_vq, tmp_path):
    """Issue 18: fit reads and encodes a few volumes at a time, so neither
    the set nor its mirrored copy is held in memory (a 128^3 cohort of 360
    volumes held 16 GB); the latents are those of the volumes, then of
    their mirror images."""
    import tracemalloc

    path = tmp_path / "cohort.npy"
    vols = np.lib.format.open_memmap(path, "w+", np.float32, (128, *SHAPE))
    vols[:] = phantom_cohort(128, SHAPE, rng=4)
    vols.flush()
    vols = np.load(path, mmap_mode="r")
    ldm = tiny_ldm(tiny_vq)
    ldm._training_batches(vols[:4], None, 2, True)  # traced once, outside
    tracemalloc.start()
    try:
        ldm._training_batches(vols, None, 2, True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < vols.nbytes  # the whole set at once: 4x
    expected = np.concatenate(
        [tiny_vq.encode(vols[:], batch_size=2), tiny_vq.encode(vols[:, ::-1])]
    )
    npt.assert_allclose(ldm._encode_in_chunks(vols, 2, True), expected, atol=1e-6)
