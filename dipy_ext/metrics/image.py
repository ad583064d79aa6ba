"""Pairwise image similarity for 3D volumes: PSNR, SSIM, MS-SSIM.

SSIM follows Wang et al. 2004 with a Gaussian window (sigma 1.5, truncated at
3.5 sigma) and population covariances, exactly as
``skimage.metrics.structural_similarity(..., gaussian_weights=True,
use_sample_covariance=False)`` computes it, the window's half-width being
cropped from the borders. MS-SSIM (Wang et al. 2003) averages 2x per axis
between scales and uses as many of the five standard scales as the volume
allows (the coarsest must stay larger than the window), with the weights
renormalised: 64^3 volumes get 3 scales, 32^3 two.
"""

import numpy as np
from scipy import ndimage

_K1, _K2 = 0.01, 0.03
_TRUNCATE = 3.5
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _pair(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"volumes differ in shape: {a.shape} and {b.shape}")
    return a, b


def _mask(mask, shape):
    if mask is None:
        return None
    mask = np.asarray(mask) > 0
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} differs from volume shape {shape}")
    if not mask.any():
        raise ValueError("mask is empty")
    return mask


def psnr(reference, test, *, data_range=1.0, mask=None):
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)``.

    ``mask`` restricts the mean squared error to the voxels it selects.
    Identical volumes give ``inf``.
    """
    a, b = _pair(reference, test)
    mask = _mask(mask, a.shape)
    err = (a - b) ** 2
    mse = err[mask].mean() if mask is not None else err.mean()
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / mse))


def _window_pad(sigma):
    return int(_TRUNCATE * sigma + 0.5)


def _ssim_maps(a, b, data_range, sigma):
    """Full SSIM map and contrast-structure map (same shape as the inputs)."""

    def filt(x):
        return ndimage.gaussian_filter(x, sigma, truncate=_TRUNCATE)

    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    ux, uy = filt(a), filt(b)
    vx = filt(a * a) - ux * ux
    vy = filt(b * b) - uy * uy
    vxy = filt(a * b) - ux * uy
    cs = (2 * vxy + c2) / (vx + vy + c2)
    luminance = (2 * ux * uy + c1) / (ux**2 + uy**2 + c1)
    return luminance * cs, cs


def _crop_mean(values, pad, mask):
    inner = tuple(slice(pad, s - pad) for s in values.shape)
    values = values[inner]
    if mask is not None:
        mask = mask[inner]
        if not mask.any():
            raise ValueError("mask selects no voxel away from the volume border")
        return float(values[mask].mean())
    return float(values.mean())


def ssim(reference, test, *, data_range=1.0, sigma=1.5, mask=None):
    """Mean structural similarity of two volumes (Gaussian window).

    Parameters
    ----------
    reference, test : ndarray (X, Y, Z)
    data_range : float, optional
        Range of the intensities (1 for volumes in [0, 1]).
    sigma : float, optional
        Standard deviation of the Gaussian window, in voxels.
    mask : ndarray of bool, optional
        Average the SSIM map over these voxels only (the border of
        ``3.5 * sigma`` voxels is always left out, as in scikit-image).
    """
    a, b = _pair(reference, test)
    mask = _mask(mask, a.shape)
    pad = _window_pad(sigma)
    if min(a.shape) <= 2 * pad:
        raise ValueError(f"volume {a.shape} is too small for a window of sigma {sigma}")
    s, _ = _ssim_maps(a, b, data_range, sigma)
    return _crop_mean(s, pad, mask)


def _halve(x):
    """2x average pooling per axis (odd trailing voxels dropped)."""
    x = x[tuple(slice(0, s - s % 2) for s in x.shape)]
    n = [s // 2 for s in x.shape]
    return x.reshape(n[0], 2, n[1], 2, n[2], 2).mean(axis=(1, 3, 5))


def ms_ssim_levels(shape, sigma=1.5):
    """How many MS-SSIM scales a volume of ``shape`` supports (1 to 5)."""
    smallest = min(shape)
    pad = _window_pad(sigma)
    levels = 1
    while levels < len(MS_SSIM_WEIGHTS) and smallest // 2 > 2 * pad:
        smallest //= 2
        levels += 1
    return levels


def ms_ssim(reference, test, *, data_range=1.0, sigma=1.5, mask=None, levels=None):
    """Multi-scale SSIM of two volumes.

    ``levels`` defaults to :func:`ms_ssim_levels`; the standard scale
    weights are renormalised to the levels used. Negative contrast-structure
    terms are clipped to 0 so the weighted product stays defined.
    """
    a, b = _pair(reference, test)
    mask = _mask(mask, a.shape)
    levels = ms_ssim_levels(a.shape, sigma) if levels is None else int(levels)
    weights = np.asarray(MS_SSIM_WEIGHTS[:levels])
    weights = weights / weights.sum()
    pad = _window_pad(sigma)
    values = []
    for level in range(levels):
        if min(a.shape) <= 2 * pad:
            raise ValueError(f"volume too small for {levels} MS-SSIM levels")
        s, cs = _ssim_maps(a, b, data_range, sigma)
        last = level == levels - 1
        values.append(max(_crop_mean(s if last else cs, pad, mask), 0.0))
        if not last:
            a, b = _halve(a), _halve(b)
            if mask is not None:
                mask = _halve(mask.astype(float)) > 0.5
                if not mask.any():
                    raise ValueError("mask vanishes at coarse MS-SSIM scales")
    return float(np.prod(np.power(values, weights)))
