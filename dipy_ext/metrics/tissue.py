"""Tissue morphology: CSF / GM / WM fractions through DIPY's HMRF classifier."""

import numpy as np
from scipy import stats

TISSUES = ("csf", "gm", "wm")


def tissue_fractions(volume, *, mask=None, beta=0.1, max_iter=10):
    """Fractions of brain voxels classified CSF, GM and WM.

    :class:`dipy.segment.tissue.TissueClassifierHMRF` segments the volume
    into three classes ordered by mean intensity, which on T1 contrast are
    CSF < GM < WM. The brain is ``mask`` or the voxels above 0.02.
    """
    from dipy.segment.tissue import TissueClassifierHMRF

    v = np.asarray(volume, dtype=np.float64)
    brain = v > 0.02 if mask is None else np.asarray(mask) > 0
    if not brain.any():
        raise ValueError("volume has no brain voxel (all values <= 0.02)")
    hmrf = TissueClassifierHMRF(verbose=False)
    _, labels, _ = hmrf.classify(v * brain, 3, beta, max_iter=max_iter)
    counts = np.array([(labels[brain] == k).sum() for k in (1, 2, 3)], dtype=float)
    return counts / counts.sum()


def tissue_distribution_distance(real_fractions, fake_fractions):
    """Per-tissue 1-Wasserstein distance and mean difference between two sets.

    Arguments are ``(N, 3)`` arrays of fractions (CSF, GM, WM).
    """
    real = np.asarray(real_fractions, dtype=float)
    fake = np.asarray(fake_fractions, dtype=float)
    out = {}
    for k, name in enumerate(TISSUES):
        out[name] = {
            "real_mean": float(real[:, k].mean()),
            "synthetic_mean": float(fake[:, k].mean()),
            "wasserstein": float(stats.wasserstein_distance(real[:, k], fake[:, k])),
        }
    return out
