"""Anatomical variation of one template brain: atrophy, ventricles, asymmetry.

Deforming one template gives volumes that differ in pose and shape but not
in what distinguishes people: cortical thickness, ventricle size, head
size, hemispheric asymmetry. :class:`TemplateAnatomy` adds those from the
template's own tissue maps (MNI152 GM / WM probabilities, CSF as the rest
of the brain mask), in template voxels (1 mm):

- **cortical thinning**: grey matter within a (spatially varying) depth of
  the nearest CSF takes the CSF intensity, as atrophy widens the sulci;
- **ventricle enlargement**: a displacement pulls sampling positions near
  the lateral ventricles towards them, so the ventricles grow by up to the
  given number of millimetres;
- **asymmetry**: one hemisphere is stretched and the other shrunk along
  the left-right axis.

Head size and pose are the cohort's random affine (:mod:`augment`).
"""

import numpy as np
from scipy import ndimage

from dipy_ext.data.augment import smooth_field


class TemplateAnatomy:
    """Tissue maps of a template, prepared once for many variations.

    Parameters
    ----------
    t1 : ndarray (X, Y, Z)
        Skull-stripped T1 in [0, 1], on a grid of about 1 mm.
    mask : ndarray of bool
        Brain mask.
    gm, wm : ndarray
        Grey and white matter probabilities in [0, 1].
    ventricle_depth_mm : float, optional
        CSF deeper than this inside the mask is taken as ventricles.
    """

    def __init__(self, t1, mask, gm, wm, *, ventricle_depth_mm=15.0):
        self.t1 = np.asarray(t1, np.float32)
        self.mask = np.asarray(mask, bool)
        csf = np.clip(1.0 - gm - wm, 0, 1) * self.mask
        self.csf_level = float(np.median(self.t1[csf > 0.8]))
        # depth of tissue below the nearest CSF or the brain's surface
        depth = ndimage.distance_transform_edt((csf < 0.5) & self.mask)
        self._rim = np.flatnonzero((gm.ravel() > 0.05) & (depth.ravel() < 3.0))
        self._rim_depth = depth.ravel()[self._rim].astype(np.float32)
        self._rim_gm = np.asarray(gm, np.float32).ravel()[self._rim]
        self._rim_coords = np.stack(np.unravel_index(self._rim, self.t1.shape))
        # the ventricles' pull: the gradient of their smoothed indicator, on
        # a 2 mm grid, scaled to a unit maximum
        inside = ndimage.distance_transform_edt(self.mask)
        ventricles = (csf > 0.5) & (inside > ventricle_depth_mm)
        self.ventricle_volume_ml = float(ventricles.sum()) / 1000
        smooth = ndimage.gaussian_filter(
            ventricles[::2, ::2, ::2].astype(np.float32), 2.5
        )
        pull = np.stack(np.gradient(smooth))
        self._pull = pull / (np.sqrt((pull**2).sum(0)).max() + 1e-12)
        self.centre = np.argwhere(self.mask).mean(0)

    def thinned(self, thinning_mm, rng):
        """T1 with the outer ``thinning_mm`` of grey matter turned into CSF.

        The depth varies smoothly over the cortex (between 0.4x and 1.6x
        ``thinning_mm``), as atrophy is regional.
        """
        if thinning_mm <= 0:
            return self.t1
        rng = np.random.default_rng(rng)
        coarse = [s // 8 + 1 for s in self.t1.shape]
        field = 1.0 + smooth_field(rng, coarse, 1.5, 0.6)
        local = thinning_mm * ndimage.map_coordinates(
            field, self._rim_coords / 8.0, order=1, mode="nearest"
        )
        weight = self._rim_gm * np.clip(local - self._rim_depth + 0.5, 0, 1)
        out = self.t1.copy()
        flat = out.reshape(-1)
        flat[self._rim] += weight * (self.csf_level - flat[self._rim])
        return out

    def displace(self, coords, *, ventricle_mm=0.0, asymmetry=0.0):
        """Template voxel coordinates ``(3, N)`` moved by ventricle growth and
        a left-right asymmetry (fractional stretch of one hemisphere)."""
        out = np.array(coords, dtype=np.float64)
        if ventricle_mm:
            for axis in range(3):
                out[axis] += ventricle_mm * ndimage.map_coordinates(
                    self._pull[axis], coords / 2.0, order=1, mode="constant"
                )
        if asymmetry:
            x = out[0] - self.centre[0]
            out[0] = self.centre[0] + x * (1 + asymmetry * np.sign(x))
        return out
