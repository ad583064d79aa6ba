import numpy as np
import numpy.testing as npt
import pytest
from scipy import ndimage

from dipy_ext.data import phantom_cohort, synthetic_brain_phantom
from dipy_ext.metrics import (
    classifier_two_sample_test,
    diversity,
    evaluate_synthesis,
    frechet_distance,
    get_feature_extractor,
    memorization,
    mmd,
    ms_ssim,
    prdc,
    psnr,
    ssim,
    tissue_fractions,
)

skimage_metrics = pytest.importorskip("skimage.metrics")


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    a = ndimage.gaussian_filter(rng.random((30, 34, 28)), 2)
    a = (a - a.min()) / (a.max() - a.min())
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    return a, b


def test_psnr_closed_form(pair):
    a, b = pair
    npt.assert_allclose(psnr(a, b), 10 * np.log10(1 / np.mean((a - b) ** 2)))
    npt.assert_allclose(psnr(a, b, data_range=2.0), psnr(a, b) + 20 * np.log10(2))
    assert psnr(a, a) == np.inf
    mask = np.zeros(a.shape, bool)
    mask[5:20, 5:20, 5:20] = True
    npt.assert_allclose(
        psnr(a, b, mask=mask), 10 * np.log10(1 / np.mean((a - b)[mask] ** 2))
    )


@pytest.mark.parametrize("sigma, data_range", [(1.5, 1.0), (1.0, 2.0)])
def test_ssim_matches_skimage(pair, sigma, data_range):
    a, b = pair
    expected = skimage_metrics.structural_similarity(
        a,
        b,
        data_range=data_range,
        gaussian_weights=True,
        sigma=sigma,
        use_sample_covariance=False,
    )
    assert abs(ssim(a, b, data_range=data_range, sigma=sigma) - expected) < 1e-4


def test_ssim_mask_and_errors(pair):
    a, b = pair
    assert ssim(a, a) == pytest.approx(1.0)
    full = ssim(a, b)
    mask = np.zeros(a.shape, bool)
    mask[10:20, 10:20, 10:20] = True
    assert ssim(a, b, mask=mask) != pytest.approx(full)
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(a, b[:-1])
    with pytest.raises(ValueError, match="mask is empty"):
        ssim(a, b, mask=np.zeros(a.shape, bool))


def test_ms_ssim_properties():
    v = synthetic_brain_phantom((64, 64, 64), rng=0)
    assert ms_ssim(v, v) == pytest.approx(1.0)
    noisy = [
        np.clip(v + s * np.random.default_rng(1).standard_normal(v.shape), 0, 1)
        for s in (0.02, 0.1, 0.3)
    ]
    values = [ms_ssim(v, n) for n in noisy]
    assert values[0] > values[1] > values[2]
    # one level is plain SSIM
    assert ms_ssim(v, noisy[1], levels=1) == pytest.approx(ssim(v, noisy[1]))


@pytest.fixture(scope="module")
def feature_sets():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((60, 5))
    return real, rng


def test_set_against_itself(feature_sets):
    real, _ = feature_sets
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    assert abs(mmd(real, real)[0]) < 0.05
    scores = prdc(real, real)
    assert scores["coverage"] == 1.0 and scores["precision"] == 1.0


def test_distances_grow_with_shift(feature_sets):
    real, rng = feature_sets
    other = rng.standard_normal((60, 5))
    fds, mmds, covs = [], [], []
    for shift in (0.0, 0.5, 1.0, 2.0):
        fake = other + shift
        fds.append(frechet_distance(real, fake))
        mmds.append(mmd(real, fake, bandwidth=2.0)[0])
        covs.append(prdc(real, fake)["coverage"])
    assert np.all(np.diff(fds) > 0)
    assert np.all(np.diff(mmds) > 0)
    assert covs[0] > covs[-1]
    npt.assert_allclose(fds[-1], 5 * 2.0**2, rtol=0.35)  # |shift|^2 dominates


def test_polynomial_mmd_and_bad_kernel(feature_sets):
    real, rng = feature_sets
    assert mmd(real, rng.standard_normal((50, 5)) + 1, kernel="polynomial")[0] > 0
    with pytest.raises(ValueError, match="kernel"):
        mmd(real, real, kernel="laplace")


def test_against_noise(feature_sets):
    real, rng = feature_sets
    noise = rng.uniform(-8, 8, (60, 5))  # same mean, far wider spread
    c2st = classifier_two_sample_test(real, noise)
    assert c2st["accuracy"] > 0.9 and c2st["ci_low"] > 0.8
    assert prdc(real, noise)["precision"] < 0.2
    # two samples of one distribution: the interval holds chance level
    same = classifier_two_sample_test(real, rng.standard_normal((60, 5)))
    assert same["ci_low"] <= 0.5 <= same["ci_high"]


def test_phantoms_against_noise_volumes():
    """Real volumes vs noise volumes in the default feature space."""
    real = phantom_cohort(10, (32, 32, 32), rng=0)
    noise = np.random.default_rng(1).random((10, 32, 32, 32)).astype(np.float32)
    stats = get_feature_extractor("stats")
    f_real, f_noise = stats(real), stats(noise)
    assert classifier_two_sample_test(f_real, f_noise)["accuracy"] == 1.0
    assert prdc(f_real, f_noise)["precision"] == 0.0
    assert frechet_distance(f_real, f_noise) > 10 * frechet_distance(
        f_real[:5], f_real[5:]
    )


def test_diversity_and_memorization():
    vols = phantom_cohort(6, (32, 32, 32), rng=0)
    div, _ = diversity(vols)
    assert 0 < div < 1
    assert diversity(np.stack([vols[0]] * 4))[0] == pytest.approx(1.0)
    copies = vols[:3] + 0.001
    mem = memorization(copies, vols)
    assert mem["flagged_fraction"] == 1.0
    assert mem["nearest_index"] == [0, 1, 2]
    fresh = phantom_cohort(3, (32, 32, 32), rng=99)
    assert memorization(fresh, vols)["flagged_fraction"] == 0.0


def test_tissue_fractions_follow_labels():
    vol, labels = synthetic_brain_phantom(
        (48, 48, 48), rng=0, noise=0, bias=0, return_labels=True
    )
    frac = tissue_fractions(vol, mask=labels > 0)
    truth = np.array([(labels[labels > 0] == k).mean() for k in (1, 2, 3)])
    npt.assert_allclose(frac, truth, atol=0.08)
    assert frac.sum() == pytest.approx(1.0)


def test_feature_extractors(tmp_path):
    vols = phantom_cohort(3, (32, 32, 32), rng=0)
    stats = get_feature_extractor("stats")
    f = stats(vols)
    assert f.shape[0] == 3 and np.isfinite(f).all()
    custom = get_feature_extractor(lambda v: [v.mean(), v.std()])
    assert custom(vols).shape == (3, 2)
    with pytest.raises(ValueError, match="none of these"):
        get_feature_extractor(tmp_path / "missing.npz")


def test_evaluate_synthesis_report():
    real = phantom_cohort(6, (32, 32, 32), rng=0, atrophy=[0, 1] * 3)
    fake = phantom_cohort(6, (32, 32, 32), rng=1, atrophy=[0, 1] * 3)
    report = evaluate_synthesis(real, fake, max_pairs=10)
    assert report["features"] == "stats"
    mem = report["memorization"]
    assert len(mem["synthetic_nn"]) == 6 and mem["threshold"] == min(mem["training_nn"])
    assert set(report["tissue"]) >= {"csf", "gm", "wm"}
    assert 0 <= report["classifier_two_sample_test"]["accuracy"] <= 1
    assert report["tissue"]["wm"]["real_std"] > 0
    artefacts = report["artefacts"]
    assert artefacts["outside_brain_real"] == artefacts["outside_brain_synthetic"] == 0
    assert set(artefacts["grid_spikes_synthetic"]) == {"2", "4", "8"}
    spectrum_test = artefacts["classifier_two_sample_test_spectrum"]
    assert spectrum_test["n"] == 12 and 0 <= spectrum_test["accuracy"] <= 1
    with pytest.raises(ValueError, match="different grids"):
        evaluate_synthesis(real, fake[:, :16])
    with pytest.raises(ValueError, match="at least 2"):
        evaluate_synthesis(real[:1], fake)
