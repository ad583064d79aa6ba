"""Covariates measured from a volume itself: brain volume, ventricle fraction.

A conditional model is trained on covariates measured this way from each
training volume, and its samples are measured the same way to check that
they follow the request. Both measures are quick and need no atlas:

- ``brain_volume`` (ml): voxels of the brain mask (the largest connected
  region above ``threshold``, holes filled) times the voxel volume;
- ``ventricle_fraction``: CSF-dark voxels (below half the brain's 95th
  intensity percentile; on T1 contrast CSF sits near 0.25 of white matter,
  grey matter near 0.75) deeper than ``depth_mm`` below the brain surface,
  over the brain mask. Deep CSF is the ventricles: sulcal CSF lies near
  the surface.
"""

import numpy as np
from scipy import ndimage

from dipy_ext.preprocessing import brain_mask

COVARIATES = ("brain_volume", "ventricle_fraction")
COVARIATE_UNITS = {"brain_volume": "ml", "ventricle_fraction": "fraction of brain"}


def measure_covariates(volumes, voxel_size, *, depth_mm=15.0, threshold=0.05):
    """``brain_volume`` (ml) and ``ventricle_fraction`` of each volume.

    Parameters
    ----------
    volumes : ndarray (N, X, Y, Z) or (X, Y, Z)
        Skull-stripped T1 volumes in [0, 1] (background 0).
    voxel_size : float or tuple of 3 float
        In mm.
    depth_mm : float, optional
        CSF deeper than this below the brain surface counts as ventricles.
    threshold : float, optional
        Brain voxels are above it.

    Returns
    -------
    covariates : ndarray (N, 2) or (2,), float32
        Columns as :data:`COVARIATES`.
    """
    v = np.asarray(volumes, dtype=np.float32)
    single = v.ndim == 3
    if single:
        v = v[None]
    vox = np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,))
    out = np.empty((len(v), 2), np.float32)
    for i, volume in enumerate(v):
        mask, deep, p95 = deep_brain(
            volume, vox, depth_mm=depth_mm, threshold=threshold
        )
        out[i, 0] = mask.sum() * np.prod(vox) / 1000.0
        out[i, 1] = (deep & (volume < 0.5 * p95)).sum() / mask.sum()
    return out[0] if single else out


def deep_brain(volume, voxel_size, *, depth_mm=15.0, threshold=0.05):
    """What the ventricle fraction is measured on: the brain mask, its
    voxels deeper than ``depth_mm`` below the surface, and the brain's
    95th intensity percentile (CSF-dark is below half of it)."""
    mask = brain_mask(volume, threshold=threshold)
    deep = ndimage.distance_transform_edt(mask, sampling=voxel_size) > depth_mm
    return mask, deep, np.percentile(volume[mask], 95)
