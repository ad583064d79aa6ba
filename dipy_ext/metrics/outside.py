"""Components outside the brain: what a skull-stripped volume never has.

A skull-stripped T1 volume is one brain and zeros around it. A generator
whose output keeps a speck, a ring or a second blob beside the brain shows
an artefact a radiologist sees at once, whatever its other scores.
"""

import numpy as np
from scipy import ndimage


def outside_components(volume, *, threshold=0.05, min_voxels=1):
    """Connected regions above ``threshold`` other than the largest one.

    Parameters
    ----------
    volume : ndarray (X, Y, Z)
        A volume in [0, 1] with a zero background.
    threshold : float, optional
        Voxels above it are foreground (the covariates' brain threshold).
    min_voxels : int, optional
        Smaller regions are not counted (1 counts every voxel).

    Returns
    -------
    sizes : list of int
        Voxel counts of the regions beside the brain, largest first
        (empty for a clean volume or an empty one).
    """
    labels, n = ndimage.label(np.asarray(volume) > threshold)
    if n < 2:
        return []
    sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1][1:]
    return [int(s) for s in sizes if s >= min_voxels]


def volumes_with_outside_components(volumes, **kwargs):
    """How many of ``volumes`` (N, X, Y, Z) have a region beside the brain."""
    return int(sum(bool(outside_components(v, **kwargs)) for v in volumes))
