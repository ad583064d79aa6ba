"""Metrics that see blur: sharpness, and how reconstructions compare with real.

A blurred volume can score a good PSNR (a half-voxel blur of an edge costs
little squared error) yet be told from real scans every time. These
measures look at what blur removes: gradient magnitude inside the brain,
and a classifier two-sample test of reconstructions against real volumes.
"""

import numpy as np
from scipy import ndimage

from dipy_ext.metrics.image import psnr, ssim
from dipy_ext.metrics.sets import classifier_two_sample_test


def brain_interior(volume, *, threshold=0.02):
    """Voxels above ``threshold``, eroded by one voxel (the brain's inside)."""
    return ndimage.binary_erosion(np.asarray(volume) > threshold)


def sharpness(volume, *, mask=None):
    """Mean gradient magnitude (intensity per voxel) inside the brain.

    ``mask`` defaults to :func:`brain_interior` of the volume itself; give
    the real volume's mask to compare a reconstruction with its original on
    the same voxels.
    """
    v = np.asarray(volume, dtype=np.float64)
    mask = brain_interior(v) if mask is None else np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("sharpness needs a volume with brain voxels (all below 0.02)")
    grad = np.sqrt(sum(g**2 for g in np.gradient(v)))
    return float(grad[mask].mean())


def sharpness_ratio(real, synthetic, *, paired=False):
    """Mean sharpness of ``synthetic`` over mean sharpness of ``real``.

    1 means as sharp as real, below 1 smoother. With ``paired`` (a
    reconstruction for each real volume, same order) each pair is measured
    on the real volume's brain mask; otherwise each volume on its own mask.
    """
    real = np.asarray(real, dtype=np.float32)
    synthetic = np.asarray(synthetic, dtype=np.float32)
    if real.ndim == 3:
        real, synthetic = real[None], synthetic[None]
    if paired and real.shape != synthetic.shape:
        raise ValueError(
            f"paired sets need the same shape, got {real.shape} and {synthetic.shape}"
        )
    masks = [brain_interior(r) for r in real]
    s_real = np.mean([sharpness(r, mask=m) for r, m in zip(real, masks)])
    if paired:
        s_syn = np.mean([sharpness(s, mask=m) for s, m in zip(synthetic, masks)])
    else:
        s_syn = np.mean([sharpness(s) for s in synthetic])
    return float(s_syn / s_real)


def reconstruction_report(real, reconstructions, *, features="stats", seed=0):
    """How close reconstructions come to the real volumes they reconstruct.

    Returns PSNR and SSIM (mean and minimum), tissue Dice (CSF, GM, WM by
    the real volume's intensity classes), the spectral spikes at periods 2,
    4 and 8 voxels (1.0: no grid; the real volumes' beside them), the radial
    spectrum distance to the real volumes (0: same spectrum; blur and grids
    raise it), the paired sharpness ratio (which a grid fools: read it with
    the spikes), and the classifier two-sample test of reconstructions vs
    the real volumes (0.5: a classifier cannot tell them apart; needs >= 2
    each).
    """
    from dipy_ext.metrics.features import get_feature_extractor
    from dipy_ext.metrics.spectrum import (
        grid_spikes,
        mean_tissue_dice,
        spectrum_distance,
    )

    real = np.asarray(real, dtype=np.float32)
    recon = np.asarray(reconstructions, dtype=np.float32)
    if real.ndim != 4 or real.shape != recon.shape or len(real) < 2:
        raise ValueError(
            "real volumes and reconstructions should be two (N, X, Y, Z) arrays "
            f"of one shape with N >= 2, got {real.shape} and {recon.shape}"
        )
    p = [psnr(a, b) for a, b in zip(real, recon)]
    s = [ssim(a, b) for a, b in zip(real, recon)]
    extractor = get_feature_extractor(features)
    c2st = classifier_two_sample_test(extractor(real), extractor(recon), seed=seed)
    return {
        "n": len(real),
        "psnr_db": float(np.mean(p)),
        "psnr_min_db": float(np.min(p)),
        "ssim": float(np.mean(s)),
        "ssim_min": float(np.min(s)),
        "tissue_dice": mean_tissue_dice(real, recon),
        "spectral_spike": grid_spikes(recon),
        "spectral_spike_real": grid_spikes(real),
        "spectrum_distance": spectrum_distance(real, recon),
        "sharpness_ratio": sharpness_ratio(real, recon, paired=True),
        "classifier_two_sample_test": c2st,
    }
