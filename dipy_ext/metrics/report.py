"""One call that computes every set metric for a real and a synthetic set."""

import time

import numpy as np

from dipy_ext.metrics import sets
from dipy_ext.metrics.features import get_feature_extractor
from dipy_ext.metrics.outside import volumes_with_outside_components
from dipy_ext.metrics.sharpness import sharpness_ratio
from dipy_ext.metrics.spectrum import grid_spikes, spectrum_distance
from dipy_ext.metrics.tissue import tissue_distribution_distance, tissue_fractions


def evaluate_synthesis(
    real,
    synthetic,
    *,
    training=None,
    features="stats",
    mask=None,
    max_pairs=100,
    seed=0,
    tissue=True,
    memorization_factor=1.0,
):
    """Compare a synthetic set with a real one; a JSON-ready dict.

    Parameters
    ----------
    real, synthetic : ndarray (N, X, Y, Z)
        Volumes on one grid, in [0, 1].
    training : ndarray (M, X, Y, Z), optional
        The volumes the generator was trained on, for the memorisation check
        (default: ``real``).
    features : str or callable, optional
        Feature extractor for Fréchet / MMD / PRDC / classifier (see
        :func:`~dipy_ext.metrics.features.get_feature_extractor`).
    mask : ndarray, optional
        Brain mask for diversity and memorisation.
    max_pairs : int, optional
        Pairs drawn (with ``seed``) for diversity in each set.
    tissue : bool, optional
        Compute HMRF tissue fractions (0.2-1 s per volume at 64^3; larger
        volumes are block-averaged to about 64^3 first).
    memorization_factor : float, optional
        Near-copy threshold, as a multiple of the closest training pair.
    """
    real, synthetic = _checked_sets(real, synthetic)
    timings = {}
    t0 = time.perf_counter()
    extractor = get_feature_extractor(features)
    f_real, f_syn = extractor(real), extractor(synthetic)
    timings["features_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    div_real = sets.diversity(real, max_pairs=max_pairs, seed=seed, mask=mask)
    div_syn = sets.diversity(synthetic, max_pairs=max_pairs, seed=seed, mask=mask)
    timings["diversity_s"] = time.perf_counter() - t0

    mmd2, bandwidth = sets.mmd(f_real, f_syn)
    report = {
        "n_real": len(real),
        "n_synthetic": len(synthetic),
        "grid_shape": list(real.shape[1:]),
        "features": extractor.name,
        "diversity": {
            "metric": "mean pairwise MS-SSIM (lower = more diverse)",
            "real": div_real[0],
            "real_std": div_real[1],
            "synthetic": div_syn[0],
            "synthetic_std": div_syn[1],
            "difference": div_syn[0] - div_real[0],
        },
        "frechet_distance": sets.frechet_distance(f_real, f_syn),
        "mmd2_rbf": mmd2,
        "mmd_bandwidth": bandwidth,
        "prdc": sets.prdc(f_real, f_syn),
        "sharpness_ratio": sharpness_ratio(real, synthetic),
        "classifier_two_sample_test": sets.classifier_two_sample_test(
            f_real, f_syn, seed=seed
        ),
    }
    t0 = time.perf_counter()
    train = real if training is None else np.asarray(training, dtype=np.float32)
    report["memorization"] = _memorization(synthetic, train, mask, memorization_factor)
    timings["memorization_s"] = time.perf_counter() - t0
    if tissue:
        t0 = time.perf_counter()
        report["tissue"] = _tissue(real, synthetic)
        timings["tissue_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report["artefacts"] = _artefacts(real, synthetic, seed)
    timings["artefacts_s"] = time.perf_counter() - t0
    report["timings"] = timings
    return report


def _checked_sets(real, synthetic):
    """Both sets as float32, each of at least 2 volumes on one grid."""
    real = np.asarray(real, dtype=np.float32)
    synthetic = np.asarray(synthetic, dtype=np.float32)
    for name, s in (("real", real), ("synthetic", synthetic)):
        if s.ndim != 4 or len(s) < 2:
            raise ValueError(
                f"the {name} set needs at least 2 volumes, got shape {s.shape}"
            )
    if real.shape[1:] != synthetic.shape[1:]:
        raise ValueError(
            f"real volumes {real.shape[1:]} and synthetic volumes "
            f"{synthetic.shape[1:]} are on different grids"
        )
    return real, synthetic


def _artefacts(real, synthetic, seed):
    """Grids, regions outside the brain and the power spectrum, and a
    classifier test on spectra: a second view beside the hand-made
    features, which see texture only through gradient statistics."""
    spectra = get_feature_extractor("spectrum")
    return {
        "grid_spikes_real": grid_spikes(real),
        "grid_spikes_synthetic": grid_spikes(synthetic),
        "outside_brain_real": volumes_with_outside_components(real),
        "outside_brain_synthetic": volumes_with_outside_components(synthetic),
        "spectrum_distance": spectrum_distance(real, synthetic),
        "classifier_two_sample_test_spectrum": sets.classifier_two_sample_test(
            spectra(real), spectra(synthetic), seed=seed
        ),
    }


def _memorization(synthetic, training, mask, factor):
    """Near-copy distances, the per-volume lists last."""
    mem = sets.memorization(synthetic, training, mask=mask, factor=factor)
    report = {k: v for k, v in mem.items() if not isinstance(v, list)}
    report["synthetic_nn"] = mem["synthetic_nn"]
    report["training_nn"] = mem["training_nn"]
    return report


def _tissue(real, synthetic):
    """HMRF tissue fractions of both sets and the distance of their
    distributions."""
    cap = {"max_voxels": 64**3}  # same for both sets, affordable at 128^3
    frac_real = np.stack([tissue_fractions(v, **cap) for v in real])
    frac_syn = np.stack([tissue_fractions(v, **cap) for v in synthetic])
    report = tissue_distribution_distance(frac_real, frac_syn)
    report["real_fractions"] = frac_real.tolist()
    report["synthetic_fractions"] = frac_syn.tolist()
    return report
