"""Synthetic head-like T1 phantoms for tests, examples and toy training.

A phantom is a skull-stripped "brain": an ellipsoid with a folded cortex of
grey matter, white matter inside, CSF in sulci, around the brain and in two
lateral ventricles, deep grey-matter nuclei, then a random smooth deformation,
a contrast jitter, an optional bias field and noise. T1-like contrast:
WM > GM > CSF > background (0).

``atrophy`` moves a phantom between two clearly separated families: 0 gives
small ventricles and a thick cortex, 1 large ventricles, a thinner cortex and
wider sulci. Data sets mixing both are what the diffusion tests use to check
that a generative model reproduces the modes of its training data.
"""

import numpy as np
from scipy import ndimage

from dipy_ext.data.augment import smooth_field

LABELS = {"background": 0, "csf": 1, "gm": 2, "wm": 3}
_INTENSITY = {1: 0.18, 2: 0.55, 3: 0.85}


def _folds(rng, theta, phi, n_waves=8):
    """Random sum of spherical waves in [-1, 1]: the cortical folding pattern."""
    out = np.zeros_like(theta)
    for _ in range(n_waves):
        k1, k2 = rng.integers(4, 12, size=2)
        p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
        out += np.sin(k1 * theta + p1) * np.sin(k2 * phi + p2)
    return out / n_waves * 2


def _labels(shape, rng, atrophy, folding=1.0):
    """Tissue label map of a head-like phantom on a [-1, 1]^3 grid."""
    axes = [np.linspace(-1, 1, s) for s in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    radii = np.array([0.72, 0.86, 0.70]) * rng.uniform(0.95, 1.05, size=3)
    xr, yr, zr = x / radii[0], y / radii[1], z / radii[2]
    rho = np.sqrt(xr**2 + yr**2 + zr**2)
    theta = np.arctan2(yr, xr)
    phi = np.arccos(np.clip(zr / np.maximum(rho, 1e-6), -1, 1))
    folds = _folds(rng, theta, phi) * folding

    cortex = 0.22 - 0.07 * atrophy + 0.05 * folds  # grey-matter band thickness
    sulci = folds > (0.55 - 0.35 * atrophy)  # CSF-filled sulci reach inwards
    labels = np.zeros(shape, np.uint8)
    brain = rho < 1.0
    labels[brain] = LABELS["wm"]
    labels[brain & (rho > 1.0 - cortex)] = LABELS["gm"]
    labels[brain & (rho > 1.0 - 0.7 * cortex) & sulci] = LABELS["csf"]
    labels[(rho >= 1.0) & (rho < 1.06)] = LABELS["csf"]  # subarachnoid rim

    # Deep grey matter (thalami) and the lateral ventricles, left and right.
    vent_size = (0.07 + 0.07 * atrophy) * rng.uniform(0.9, 1.1)
    for side in (-1, 1):
        dx = x - side * 0.17 * radii[0]
        thal = (dx / 0.14) ** 2 + ((y + 0.12) / 0.18) ** 2 + ((z + 0.05) / 0.14) ** 2
        labels[thal < 1] = LABELS["gm"]
        vx = x - side * (0.10 + 0.05 * atrophy) * radii[0]
        vent = (
            (vx / vent_size) ** 2
            + ((y - 0.05) / (2.4 * vent_size + 0.1)) ** 2
            + ((z - 0.12) / (1.2 * vent_size)) ** 2
        )
        labels[vent < 1] = LABELS["csf"]
    return labels


def _deform(labels, rng, strength):
    """Warp a label map with a random smooth displacement field (nearest)."""
    shape = labels.shape
    sigma = max(shape) / 8
    amplitude = strength * max(shape) / 32
    coords = np.meshgrid(
        *[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"
    )
    warped = [c + smooth_field(rng, shape, sigma, amplitude) for c in coords]
    return ndimage.map_coordinates(labels, warped, order=0, mode="constant")


def synthetic_brain_phantom(
    shape=(64, 64, 64),
    *,
    rng=None,
    atrophy=0.0,
    folding=1.0,
    deformation=1.0,
    noise=0.01,
    bias=0.1,
    return_labels=False,
):
    """One skull-stripped, T1-like brain phantom with values in [0, 1].

    Parameters
    ----------
    shape : tuple of 3 int, optional
        Volume shape.
    rng : numpy.random.Generator or int, optional
        Random generator (or seed); every random choice is drawn from it.
    atrophy : float, optional
        0 (small ventricles, thick cortex) to 1 (large ventricles, thin
        cortex, wide sulci).
    folding : float, optional
        Amplitude of the cortical folding (sulci and cortex thickness
        changes); 0 gives a smooth cortex, which suits grids too coarse to
        resolve folds (32^3 and below).
    deformation : float, optional
        Strength of the random smooth deformation (about ``deformation *
        max(shape) / 32`` voxels at most); 0 turns it off.
    noise : float, optional
        Standard deviation of Gaussian noise added inside the head.
    bias : float, optional
        Peak relative amplitude of a smooth multiplicative bias field.
    return_labels : bool, optional
        Also return the tissue label map (0 background, 1 CSF, 2 GM, 3 WM).

    Returns
    -------
    volume : ndarray, float32, shape ``shape``
    labels : ndarray, uint8, shape ``shape`` (if ``return_labels``)
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape should be 3 integers >= 8, got {shape}")
    rng = np.random.default_rng(rng)
    labels = _labels(shape, rng, float(atrophy), float(folding))
    if deformation > 0:
        labels = _deform(labels, rng, deformation)

    contrast = rng.uniform(0.93, 1.07, size=3)
    volume = np.zeros(shape, np.float32)
    for label, value in _INTENSITY.items():
        volume[labels == label] = value * contrast[label - 1]
    # partial-volume blur, then tissue texture, bias field and noise
    volume = ndimage.gaussian_filter(volume, 0.6)
    head = labels > 0
    texture = smooth_field(rng, shape, max(shape) / 16, 0.03)
    volume = volume * (1 + texture)
    if bias > 0:
        volume = volume * (1 + smooth_field(rng, shape, max(shape) / 4, bias))
    if noise > 0:
        volume = volume + noise * rng.standard_normal(shape)
    volume = np.clip(volume * ndimage.binary_dilation(head), 0, 1).astype(np.float32)
    return (volume, labels) if return_labels else volume


def phantom_cohort(n, shape=(64, 64, 64), *, rng=None, atrophy=0.0, **kwargs):
    """``n`` phantoms stacked as ``(n, X, Y, Z)``.

    ``atrophy`` may be a scalar or a sequence of ``n`` values (for example to
    mix two families); other keywords go to :func:`synthetic_brain_phantom`.
    """
    rng = np.random.default_rng(rng)
    atrophy = np.broadcast_to(np.asarray(atrophy, dtype=float), (n,))
    return np.stack(
        [synthetic_brain_phantom(shape, rng=rng, atrophy=a, **kwargs) for a in atrophy]
    )


def _central(volumes):
    volumes = np.asarray(volumes)
    sl = tuple(slice(s // 3, s - s // 3) for s in volumes.shape[-3:])
    return volumes[(..., *sl)]


def phantom_family(volumes, reference, reference_families):
    """Family (0 or 1) of each volume: the nearer family mean of ``reference``.

    The comparison is restricted to the central third of each axis, where
    the ventricles are; unlike a threshold on dark voxels it still works on
    blurred volumes (for example VQ-VAE reconstructions or samples).
    """
    ref = _central(reference)
    fam = np.asarray(reference_families)
    means = [ref[fam == k].mean(axis=0) for k in (0, 1)]
    v = _central(volumes)
    dist = np.stack([((v - m) ** 2).mean(axis=(-3, -2, -1)) for m in means], axis=-1)
    return dist.argmin(axis=-1)


def ventricle_fraction(volume, *, threshold=0.35):
    """Fraction of the central region of a phantom that is dark (CSF-like).

    A cheap descriptor that separates the two ``atrophy`` families: the
    central box (middle third of each axis) holds the ventricles, so its
    fraction of voxels darker than ``threshold`` grows with ventricle size.
    """
    return (_central(volume) < threshold).mean(axis=(-3, -2, -1))
