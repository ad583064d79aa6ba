"""Conditional models on measured covariates, and the settings a file carries."""

import nibabel as nib
import numpy as np
import numpy.testing as npt
import pytest

pytest.importorskip("keras")

from dipy_ext.data import phantom_cohort  # noqa: E402
from dipy_ext.metrics.covariates import (  # noqa: E402
    COVARIATES,
    brain_mask,
    measure_covariates,
)
from dipy_ext.nn.diffusion import (  # noqa: E402
    DEFAULT_SAMPLING,
    LatentDiffusion3D,
    condition_statistics,
)
from dipy_ext.nn.vqvae import VQVAE3D  # noqa: E402
from dipy_ext.workflows.base import save_nifti_atomic  # noqa: E402

SHAPE = (16, 16, 16)


def ball_brain(shape, radius, *, ventricle=0):
    """A ball of 'white matter' with an optional dark centre of that radius."""
    idx = np.indices(shape) - (np.asarray(shape)[:, None, None, None] - 1) / 2
    r = np.sqrt((idx**2).sum(0))
    v = np.where(r <= radius, 0.9, 0.0).astype(np.float32)
    v[r <= ventricle] = 0.2
    return v


def test_covariates_measure_volume_and_deep_csf():
    vox = 2.0
    big = ball_brain((40, 40, 40), 15, ventricle=5)
    small = ball_brain((40, 40, 40), 12)
    cov = measure_covariates(np.stack([big, small]), vox)
    # volume of the mask (holes filled, the dark centre included)
    expected = 4 / 3 * np.pi * (15 * vox) ** 3 / 1000
    assert cov.shape == (2, len(COVARIATES))
    assert abs(cov[0, 0] - expected) / expected < 0.05
    assert cov[1, 0] < cov[0, 0]
    # the dark centre is deep (its surface 20 mm below the brain's)
    npt.assert_allclose(cov[0, 1], (5 / 15) ** 3, rtol=0.3)
    assert cov[1, 1] == 0
    npt.assert_array_equal(measure_covariates(big, vox), cov[0])
    with pytest.raises(ValueError, match="no brain"):
        brain_mask(np.zeros((8, 8, 8)))


@pytest.fixture(scope="module")
def tiny_vq():
    vq = VQVAE3D(
        input_shape=SHAPE,
        channels=(8, 16),
        quantizer="vq",
        output_stage="subpixel",
        num_embeddings=16,
        embedding_dim=4,
        space="MNI",
        seed=0,
        verbose=False,
    )
    vq.fit(phantom_cohort(4, SHAPE, rng=0), epochs=1, batch_size=2)
    return vq


@pytest.fixture(scope="module")
def conditional(tiny_vq):
    ldm = LatentDiffusion3D(
        tiny_vq,
        channels=(8, 16),
        attention_levels=(False, False),
        num_res_blocks=1,
        num_train_timesteps=20,
        condition_dim=2,
        condition_names=["brain_volume", "ventricle_fraction"],
        sampling={"num_inference_steps": 4, "sampler": "dpm_solver"},
        seed=0,
        verbose=False,
    )
    cond = np.array([[1200, 0.02], [1400, 0.04], [1300, 0.03], [1500, 0.05]])
    ldm.fit(phantom_cohort(4, SHAPE, rng=1), conditions=cond, epochs=1, batch_size=2)
    return ldm, cond


def test_condition_statistics_recorded_and_saved(conditional, tmp_path):
    ldm, cond = conditional
    stats = ldm.condition_stats
    npt.assert_allclose(stats["mean"], cond.mean(0))
    npt.assert_allclose(stats["min"], cond.min(0))
    npt.assert_allclose(stats["max"], cond.max(0))
    npt.assert_allclose(stats["covariance"], np.cov(cond, rowvar=False))
    # the network sees standardised conditions, whatever their units
    z = ldm._standardise(cond.astype(np.float32))
    npt.assert_allclose(z.mean(0), 0, atol=1e-5)
    npt.assert_allclose(z.std(0), 1, atol=1e-5)
    again = LatentDiffusion3D.load(ldm.save(tmp_path / "m.npz"))
    assert again.condition_stats == stats
    assert again.sampling == {**DEFAULT_SAMPLING, **ldm.sampling}
    assert again.vqvae.space == "MNI"
    with pytest.raises(ValueError, match="condition_stats"):
        LatentDiffusion3D(
            ldm.vqvae,
            condition_dim=2,
            condition_names=["a", "b"],
            condition_stats=condition_statistics(cond[:, :1]),
        )
    with pytest.raises(ValueError, match="sampling takes"):
        LatentDiffusion3D(ldm.vqvae, sampling={"steps": 10})


def test_unconditional_call_draws_conditions_from_training(conditional):
    ldm, cond = conditional
    drawn = ldm.sample_conditions(50, seed=4)
    assert drawn.shape == (50, 2)
    assert (drawn >= cond.min(0) - 1e-3).all() and (drawn <= cond.max(0) + 1e-3).all()
    assert drawn[:, 0].std() > 10  # drawn, not the mean repeated
    # sample i of a seed gets the same draw whatever the first sample asked
    npt.assert_array_equal(ldm.sample_conditions(3, seed=4, first_sample=2), drawn[2:5])
    # predict without conditions uses exactly those draws
    kw = {"seed": 4, "progress": False}
    npt.assert_array_equal(
        ldm.predict(2, **kw), ldm.predict(2, conditions=drawn[:2], **kw)
    )


def test_recommended_sampling_is_the_default(conditional):
    ldm, _ = conditional
    kw = {"seed": 2, "progress": False}
    npt.assert_array_equal(
        ldm.predict(1, **kw),
        ldm.predict(1, sampler="dpm_solver", num_inference_steps=4, **kw),
    )
    assert (
        np.abs(ldm.predict(1, **kw) - ldm.predict(1, num_inference_steps=3, **kw)).max()
        > 0
    )


def test_out_of_range_request_warns(conditional, dipy_log):
    ldm, _ = conditional
    ldm.predict(1, conditions=[[1300, 0.03]], seed=0, progress=False)
    assert "outside" not in dipy_log.text
    ldm.predict(1, conditions=[[2500, 0.03]], seed=0, progress=False)
    assert "brain_volume=2500 is outside the training range [1200, 1500]" in (
        dipy_log.text
    )


def test_nifti_header_complete(tmp_path):
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    affine[:3, 3] = [-90, -120, -70]
    path = save_nifti_atomic(
        tmp_path / "a.nii.gz",
        np.zeros((4, 4, 4)),
        affine,
        space="MNI",
        description="brain_volume=1400 ventricle_fraction=0.03",
    )
    header = nib.load(path).header
    assert header.get_xyzt_units() == ("mm", "sec")
    assert int(header["sform_code"]) == 4 and int(header["qform_code"]) == 4
    npt.assert_allclose(header.get_sform(), affine)
    npt.assert_allclose(header.get_qform(), affine)
    assert (
        header["descrip"]
        .tobytes()
        .rstrip(b"\0")
        .decode()
        .startswith("brain_volume=1400")
    )
    other = nib.load(
        save_nifti_atomic(tmp_path / "b.nii.gz", np.zeros((4,) * 3), affine)
    )
    assert int(other.header["sform_code"]) == 2


def test_same_volume_same_bytes(tmp_path, monkeypatch):
    """A fixed gzip time stamp: checksums of outputs repeat across runs."""
    import gzip
    import time

    data = np.random.default_rng(0).random((4, 4, 4))
    a = save_nifti_atomic(tmp_path / "a.nii.gz", data, np.eye(4)).read_bytes()
    monkeypatch.setattr(time, "time", lambda: 2e9)  # gzip reads the clock
    b = save_nifti_atomic(tmp_path / "b.nii.gz", data, np.eye(4)).read_bytes()
    assert a == b
    assert gzip.decompress(a)  # still a valid gzip stream


def test_a_condition_named_twice_is_refused():
    from dipy_ext.workflows.base import parse_conditions

    with pytest.raises(ValueError, match="names 'age' twice"):
        parse_conditions(["age=60", "age=70", "sex=1"], ["age", "sex"])
