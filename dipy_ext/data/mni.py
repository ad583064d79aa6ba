"""Training cohorts derived from the MNI152 2009 template (offline).

nilearn ships the ICBM 2009a symmetric T1 template and its GM / WM
probability maps at 1 mm. :func:`mni_cohort` turns that one brain into as
many training volumes as wanted: skull-stripped with a mask built from the
GM + WM maps, then for each volume a random affine, a smooth elastic
deformation, a bias field, a contrast change and noise, sampled straight
onto the model grid. This is what the embedded default model is trained on.

ICBM 2009 notice (keep it with any derivative, see ``MNI_NOTICE``).
"""

import os

import numpy as np
from scipy import ndimage

from dipy_ext.data.augment import random_intensity, random_rigid_scale, warp_onto_grid
from dipy_ext.preprocessing import grid_affine, intensity_range

MNI_NOTICE = (
    "MNI ICBM152 non-linear symmetric 2009a template: Copyright (C) 1993-2009 "
    "Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological "
    "Institute, McGill University. Permission to use, copy, modify, and "
    "distribute this software and its documentation for any purpose and "
    "without fee is hereby granted, provided that the above copyright notice "
    "appear in all copies. The authors and McGill University make no "
    "representations about the suitability of this software for any purpose. "
    'It is provided "as is" without express or implied warranty. The authors '
    "are not responsible for any data loss, equipment damage, property loss, "
    "or injury to subjects or patients resulting from the use or misuse of "
    "this software package. References: Fonov et al., NeuroImage 47 (2009) "
    "S102 and NeuroImage 54 (2011) 313-327; Collins et al., NeuroImage (1999)."
)


def _nilearn_data():
    try:
        import nilearn
    except ImportError as e:
        raise ImportError(
            "the MNI template comes with nilearn: pip install nilearn "
            "(or pip install 'dipy_ext[default-model]')"
        ) from e
    return os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data")


def load_mni_template():
    """The MNI152 2009a T1 template, skull-stripped, scaled to [0, 1].

    Returns
    -------
    t1 : ndarray (197, 233, 189), float32
        Skull-stripped T1 in [0, 1] (99.5th brain percentile -> 1).
    affine : ndarray (4, 4)
        MNI space, 1 mm.
    mask : ndarray of bool
        Brain mask: GM + WM probability > 0.3, cavities (ventricles) filled,
        closed over 3 mm so the sulcal CSF is kept.
    """
    import nibabel as nib

    folder = _nilearn_data()

    def load(name):
        img = nib.load(
            os.path.join(
                folder, f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"
            )
        )
        return np.asarray(img.dataobj, dtype=np.float32), img.affine

    t1, affine = load("t1")
    gm, _ = load("gm")
    wm, _ = load("wm")
    tissue = (gm + wm) / 255.0 > 0.3
    ball = ndimage.generate_binary_structure(3, 1)
    mask = ndimage.binary_closing(tissue, ball, iterations=3)
    mask = ndimage.binary_fill_holes(mask)
    mask = ndimage.binary_dilation(mask, ball, iterations=1)
    low, high = intensity_range(t1, mask)
    t1 = np.clip((t1 - low) / (high - low), 0, 1) * mask
    return t1.astype(np.float32), affine, mask


def mni_cohort(
    n,
    *,
    shape=(64, 64, 64),
    voxel_size=3.0,
    rng=None,
    displacement_mm=6.0,
    smoothness_mm=25.0,
    rotation_deg=6.0,
    scale=0.08,
    intensity=True,
    progress=False,
):
    """``n`` augmented MNI-template volumes on a model grid.

    Returns
    -------
    volumes : ndarray (n, *shape), float32 in [0, 1]
    affine : ndarray (4, 4)
        The grid's voxel-to-world affine (MNI space, centred on the brain).
    """
    from tqdm.auto import tqdm

    rng = np.random.default_rng(rng)
    t1, affine, mask = load_mni_template()
    vox = np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,))
    # anti-aliasing once, for the 1 mm -> voxel_size resampling
    smooth = ndimage.gaussian_filter(t1, np.maximum(0, (vox - 1) / 2))
    idx = np.argwhere(mask)
    centre = affine[:3, :3] @ ((idx.min(0) + idx.max(0)) / 2) + affine[:3, 3]
    grid = grid_affine(shape, vox, centre)
    volumes = np.empty((n, *shape), np.float32)
    for i in tqdm(range(n), desc="MNI cohort", disable=not progress):
        warp = {
            "transform": random_rigid_scale(
                rng, rotation_deg=rotation_deg, scale=scale
            ),
            "displacement_mm": displacement_mm,
            "smoothness_mm": smoothness_mm,
        }
        state = rng.integers(2**32)
        v = warp_onto_grid(smooth, affine, shape, grid, rng=state, **warp)
        m = warp_onto_grid(
            mask.astype(np.float32), affine, shape, grid, rng=state, **warp
        )
        v = v * (m > 0.5)
        if intensity:
            v = random_intensity(v, rng)
        low, high = intensity_range(v, v > 0)
        volumes[i] = np.clip((v - low) / (high - low), 0, 1)
    return volumes, grid
