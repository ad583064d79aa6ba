import json
import zipfile

import numpy as np
import numpy.testing as npt
import pytest
from scipy import ndimage

pytest.importorskip("keras")

from dipy_ext.metrics import psnr  # noqa: E402
from dipy_ext.nn.vqvae import VQVAE3D  # noqa: E402

from .conftest import SHAPE  # noqa: E402


def tiny(**kw):
    cfg = {
        "input_shape": (16, 16, 16),
        "channels": (8, 16),
        "num_res_blocks": 1,
        "quantizer": "vq",
        "output_stage": "subpixel",
        "num_embeddings": 16,
        "embedding_dim": 4,
        "seed": 0,
    }
    cfg.update(kw)
    return VQVAE3D(**cfg)


def test_shapes_and_dtypes():
    vq = tiny()
    x = np.random.default_rng(0).random((3, 16, 16, 16)).astype(np.float32)
    assert vq.latent_shape == (4, 4, 4) and vq.compression == 4
    rec = vq.predict(x)
    assert rec.shape == x.shape and rec.dtype == np.float32
    assert vq.predict(x[0]).shape == (16, 16, 16)  # single volume, no batch axis
    z = vq.encode(x)
    assert z.shape == (3, 4, 4, 4, 4) and z.dtype == np.float32
    idx = vq.encode(x, return_indices=True)
    assert idx.shape == (3, 4, 4, 4) and idx.max() < 16
    npt.assert_array_equal(z, vq.codebook[idx])
    assert vq.decode(z).shape == x.shape
    assert vq.decode(z[0]).shape == (16, 16, 16)
    assert vq.voxel_size == (1.0, 1.0, 1.0)


def test_eight_x_compression():
    vq = tiny(input_shape=(32, 32, 16), channels=(4, 8, 8))
    assert vq.latent_shape == (4, 4, 2) and vq.compression == 8
    # without pixel shuffling (the layout of older model files) one level less
    vq = tiny(input_shape=(32, 32, 16), channels=(4, 8, 8, 8), pixel_shuffle=False)
    assert vq.latent_shape == (4, 4, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (18, 16, 16)}, "divisible by 4"),
        ({"num_res_blocks": (1, 1, 1)}, "num_res_blocks"),
        ({"loss": "huber"}, "'l1' or 'l2'"),
    ],
)
def test_bad_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


@pytest.mark.parametrize(
    "data, message",
    [
        (np.zeros((2, 16, 16, 8)), "shape"),
        (np.zeros((16, 16)), "shape"),
        (np.full((1, 16, 16, 16), np.nan), "NaN"),
        ("volume.nii.gz", "numpy array"),
        ([], "empty"),
    ],
)
def test_bad_volumes(data, message):
    vq = tiny()
    with pytest.raises(ValueError, match=message):
        vq.predict(data)


def test_bad_latents():
    with pytest.raises(ValueError, match="latents should have shape"):
        tiny().decode(np.zeros((1, 8, 8, 8, 4)))


def test_save_load_identical(tmp_path):
    vq = tiny()
    x = np.random.default_rng(1).random((2, 16, 16, 16)).astype(np.float32)
    vq.fit(x, epochs=1, batch_size=2)  # moves the EMA codebook away from init
    path = vq.save(tmp_path / "vq.npz")
    again = VQVAE3D.load(path)
    npt.assert_array_equal(again.predict(x), vq.predict(x))
    npt.assert_array_equal(again.codebook, vq.codebook)
    assert again.get_config() == vq.get_config()


def test_background_threshold_gives_skull_stripped_output(tmp_path):
    """A background threshold clips outputs to [0, 1] and zeroes everything
    outside the decoded brain, in predict and decode, and is stored."""
    x = np.zeros((2, 16, 16, 16), np.float32)
    x[:, 3:13, 3:13, 3:13] = 0.7
    raw = tiny()
    vq = tiny(background_threshold=0.05)
    raw.fit(x, epochs=2, batch_size=2)
    vq.network.set_weights(raw.network.get_weights())
    rec_raw, rec = raw.predict(x), vq.predict(x)
    assert 0.0 <= rec.min() and rec.max() <= 1.0
    keep = rec > 0
    npt.assert_allclose(rec[keep], np.clip(rec_raw[keep], 0, 1))
    assert not np.all(rec_raw[~keep] == 0)  # the raw decoder leaves a haze
    npt.assert_allclose(vq.decode(vq.encode(x)), rec, atol=1e-5)
    again = VQVAE3D.load(vq.save(tmp_path / "vq.npz"))
    assert again.background_threshold == 0.05
    npt.assert_array_equal(again.predict(x), rec)
    with pytest.raises(ValueError, match="background_threshold"):
        tiny(background_threshold=1.5)


def test_intensity_calibration_matches_the_real_distribution(
    trained_vqvae, heldout_phantoms, tmp_path
):
    """calibrate_intensity maps the output's intensity quantiles onto the
    real ones (closer than the raw decoder), in predict and decode, and
    the map is stored in the model file."""
    vq = VQVAE3D.load(trained_vqvae["path"])
    levels = np.linspace(1, 99, 50)

    def quantile_gap(recon):
        return np.abs(
            np.percentile(recon, levels) - np.percentile(heldout_phantoms, levels)
        ).mean()

    raw = vq.predict(heldout_phantoms)
    # a small, fixed overshoot of bright tissue, as the 1.5 mm decoder has
    output_layer = vq.decoder.get_layer("to_volume")
    output_layer.set_weights([w * 1.1 for w in output_layer.get_weights()])
    off = vq.predict(heldout_phantoms)
    assert quantile_gap(off) > quantile_gap(raw)
    knots = vq.calibrate_intensity(heldout_phantoms)
    assert knots.shape[0] == 2 and np.all(np.diff(knots[0]) > 0)
    assert np.all(np.diff(knots[1]) >= 0)
    calibrated = vq.predict(heldout_phantoms)
    assert quantile_gap(calibrated) < 0.5 * quantile_gap(off)
    npt.assert_allclose(vq.decode(vq.encode(heldout_phantoms)), calibrated, atol=1e-5)
    again = VQVAE3D.load(vq.save(tmp_path / "vq.npz"))
    npt.assert_allclose(again.intensity_map, knots)
    npt.assert_array_equal(again.predict(heldout_phantoms), calibrated)
    with pytest.raises(ValueError, match="intensity_map"):
        tiny(intensity_map=[[0.0, 0.5, 0.4], [0.0, 0.5, 1.0]])
    with pytest.raises(ValueError, match="intensity_map"):
        tiny(intensity_map=[0.0, 1.0])


def test_load_errors(tmp_path):
    vq = tiny()
    path = vq.save(tmp_path / "vq.npz")
    with pytest.raises(ValueError, match="does not exist"):
        VQVAE3D.load(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a (readable )?dipy_ext model"):
        VQVAE3D.load(garbage)

    def rewrite(meta_change=None, drop_weight=False):
        out = tmp_path / "changed.npz"
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
            for name in src.namelist():
                data = src.read(name)
                if name == "__meta__.npy" and meta_change:
                    meta = json.loads(np.load(src.open(name)).tobytes())
                    meta_change(meta)
                    arr = np.frombuffer(json.dumps(meta).encode(), np.uint8)
                    with dst.open(name, "w") as f:
                        np.lib.format.write_array(f, arr)
                    continue
                if drop_weight and name.endswith("0003.npy"):
                    continue
                dst.writestr(name, data)
        return out

    with pytest.raises(ValueError, match="format version 99"):
        VQVAE3D.load(rewrite(lambda m: m.update(format_version=99)))
    with pytest.raises(ValueError, match="holds a LatentDiffusion3D model"):
        VQVAE3D.load(rewrite(lambda m: m.update(kind="LatentDiffusion3D")))
    with pytest.raises(ValueError, match="do not match the declared model"):
        VQVAE3D.load(rewrite(lambda m: m["config"].update(channels=[8, 32])))
    with pytest.raises(ValueError, match="do not match the declared model"):
        VQVAE3D.load(rewrite(drop_weight=True))


@pytest.mark.slow
def test_mixed_precision_runs_and_keeps_float32_weights(tmp_path):
    vq = tiny(mixed_precision=True)
    x = np.random.default_rng(2).random((2, 16, 16, 16)).astype(np.float32)
    history = vq.fit(x, epochs=2, batch_size=2)
    assert np.isfinite(history.history["loss"]).all()
    assert all(str(v.dtype) == "float32" for v in vq.network.weights)
    rec = vq.predict(x)
    assert rec.dtype == np.float32
    # the same weights load into a float32 model; decoded from the same codes
    # (a bf16 rounding may pick a neighbouring code) outputs agree to bf16
    # precision
    fp32 = VQVAE3D.load(vq.save(tmp_path / "bf16.npz"))
    codes = fp32.encode(x)
    assert np.abs(fp32.decode(codes) - vq.decode(codes)).mean() < 0.05


def test_training_lowers_loss_and_uses_codes(trained_vqvae, heldout_phantoms):
    history = trained_vqvae["history"]
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["l1"][-1] < 0.06
    assert min(history["codebook_usage"]) > 0.2  # > 12 of 64 codes each epoch
    vq = VQVAE3D.load(trained_vqvae["path"])
    usage = vq.codebook_usage(heldout_phantoms)
    assert usage["codebook_usage"] > 0.2
    assert usage["perplexity"] > 8
    rec = vq.predict(heldout_phantoms)
    assert np.mean([psnr(a, b) for a, b in zip(heldout_phantoms, rec)]) > 20


def _stride_score(residual, period):
    """How strongly a residual varies with the voxel's phase at the stride.

    Voxels are grouped by ``(i % period, j % period, k % period)``; a decoder
    checkerboard shifts these groups' means apart. The score is the spread of
    the group means over the spread expected by chance from the residual's own
    size (``std / sqrt(voxels per group)``): about 1 or less without a pattern
    (less for a smooth residual), and ``~ sqrt(voxels per group) * a / (2 *
    std)`` for a two-level pattern of amplitude ``a``. It sums the energy at all
    stride frequencies of the 3D spectrum, so one noisy bin cannot dominate.
    """
    r = residual - residual.mean()
    n = np.array(r.shape) // period
    phases = r.reshape(n[0], period, n[1], period, n[2], period)
    group_means = phases.mean(axis=(0, 2, 4))
    chance = r.std() / np.sqrt(np.prod(n)) + 1e-12
    return float(group_means.std() / chance)


def test_decoder_leaves_no_periodic_artifact(trained_vqvae, heldout_phantoms):
    vq = VQVAE3D.load(trained_vqvae["path"])
    factor = SHAPE[0] // vq.latent_shape[0]
    rec = vq.predict(heldout_phantoms)
    residuals = [r - v for r, v in zip(rec, heldout_phantoms)]
    # a smooth volume (a blurred ball) goes through without artifacts too
    g = np.linspace(-1, 1, SHAPE[0])
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    smooth = ndimage.gaussian_filter(0.7 * (x**2 + y**2 + z**2 < 0.5), 1.5)
    smooth = smooth.astype(np.float32)
    residuals.append(vq.predict(smooth) - smooth)
    scores = [_stride_score(r, factor) for r in residuals]
    assert max(scores) < 3.0, scores
    # negative control: a two-level pattern at the stride, as large as the
    # residual's own RMS, added to each residual is flagged by a wide margin
    idx = np.indices(SHAPE).sum(axis=0)
    checker = (idx % factor) < factor // 2
    flagged = [_stride_score(r + r.std() * checker, factor) for r in residuals]
    assert min(flagged) > 6.0, flagged


def test_damaged_or_wrong_model_files(tmp_path):
    """One-line errors for files that are not (intact) model files."""
    import nibabel as nib

    path = tiny().save(tmp_path / "vq.npz")
    with pytest.raises(ValueError, match="is a folder"):
        VQVAE3D.load(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("weights\n")
    nifti = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), nifti)
    for wrong in (text, nifti):
        with pytest.raises(ValueError, match="is not a dipy_ext model file") as e:
            VQVAE3D.load(wrong)
        assert "pickle" not in str(e.value)
    # a damaged compressed stream (flipped bytes inside a weight array)
    raw = bytearray(path.read_bytes())
    damaged = tmp_path / "damaged.npz"
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("vqvae/0004.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 8, start + min(info.compress_size, 64)):
        raw[i] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="not a readable dipy_ext model"):
        VQVAE3D.load(damaged)
    # metadata that is valid JSON but not a mapping
    odd = tmp_path / "odd.npz"
    np.savez(odd, __meta__=np.frombuffer(b"[1, 2]", np.uint8))
    with pytest.raises(ValueError, match="bad metadata"):
        VQVAE3D.load(odd)


@pytest.mark.slow
def test_diverging_training_stops_with_one_line(tmp_path):
    x = np.random.default_rng(0).random((2, 16, 16, 16)).astype(np.float32) * 1e30
    vq = tiny()
    with pytest.raises(
        ValueError, match=r"training diverged: the loss became (nan|inf)"
    ):
        vq.fit(x, epochs=2, batch_size=2, checkpoint_dir=tmp_path / "ckpt")


def test_shipped_model_file_gives_the_outputs_it_gave_before_the_quantizer_seam():
    """Model files made before quantizers were objects (no "quantizer" or
    "output_stage" in their config) load as EMA VQ with a sub-pixel output
    and give the same codes and decoder output as the code before the seam
    (numbers taken with that code, commit 46476f5)."""
    from dipy_ext.data.default import default_model_path
    from dipy_ext.nn.diffusion import LatentDiffusion3D

    vq = LatentDiffusion3D.load(default_model_path()).vqvae
    assert vq.quantizer.kind == "vq" and vq.output_stage == "subpixel"
    latents = vq.random_latents(1, seed=3)
    raw = np.asarray(vq.decoder.predict(latents, verbose=0))[0, ..., 0]
    raw = raw.astype(np.float64)
    indices = vq.encode(raw.astype(np.float32), return_indices=True)
    npt.assert_allclose(
        latents.astype(np.float64).sum(), 2539.1782640218735, rtol=1e-12
    )
    npt.assert_allclose(raw.sum(), 1294868.4881016759, rtol=1e-9)
    npt.assert_allclose((raw**2).sum(), 921303.9289516236, rtol=1e-9)
    npt.assert_allclose(raw[64, 64, 64], 0.4913475811481476, rtol=1e-9)
    assert int(indices.sum()) == 2004232


def test_defaults_are_the_benchmark_choice():
    vq = VQVAE3D(input_shape=(16, 16, 16), seed=0, verbose=False)
    assert vq.quantizer.spec() == {"kind": "fsq", "levels": [8, 8, 8, 5, 5, 5]}
    assert vq.output_stage == "interpolate" and vq.compression == 4
    assert vq.embedding_dim == 6 and vq.num_embeddings == 64000
