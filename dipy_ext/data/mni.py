"""Training cohorts derived from the MNI152 2009 template (offline).

nilearn ships the ICBM 2009a symmetric T1 template and its GM / WM
probability maps at 1 mm. :func:`mni_cohort` turns that one brain into as
many training volumes as wanted: skull-stripped with a mask built from the
GM + WM maps, then for each volume a random affine, a smooth elastic
deformation, a bias field, a contrast change and noise, sampled straight
onto the model grid. This is what the embedded default model is trained on.

ICBM 2009 notice (keep it with any derivative, see ``MNI_NOTICE``).
"""

import numpy as np
from scipy import ndimage

from dipy_ext.data.anatomy import TemplateAnatomy
from dipy_ext.data.augment import (
    random_intensity,
    random_rigid_scale,
    warp_coordinates,
)
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


def _nilearn_datasets():
    try:
        from nilearn import datasets
    except ImportError as e:
        raise ImportError(
            "the MNI template comes with nilearn: pip install nilearn "
            "(or pip install 'dipy_ext[default-model]')"
        ) from e
    return datasets


def load_mni_tissues():
    """The template's grey and white matter probabilities, 1 mm, in [0, 1]."""
    datasets = _nilearn_datasets()
    return tuple(
        np.asarray(load(resolution=1).get_fdata(), dtype=np.float32)
        for load in (datasets.load_mni152_gm_template, datasets.load_mni152_wm_template)
    )


def load_mni_template():
    """The MNI152 2009a T1 template, skull-stripped, scaled to [0, 1].

    Read through nilearn's public loaders (its packaged 1 mm files).

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
    img = _nilearn_datasets().load_mni152_template(resolution=1)
    t1, affine = np.asarray(img.get_fdata(), dtype=np.float32), img.affine
    gm, wm = load_mni_tissues()
    tissue = gm + wm > 0.3
    ball = ndimage.generate_binary_structure(3, 1)
    mask = ndimage.binary_closing(tissue, ball, iterations=3)
    mask = ndimage.binary_fill_holes(mask)
    mask = ndimage.binary_dilation(mask, ball, iterations=1)
    low, high = intensity_range(t1, mask)
    t1 = np.clip((t1 - low) / (high - low), 0, 1) * mask
    return t1.astype(np.float32), affine, mask


def _draw_subjects(n, rng, rotation_deg, scale, head_size, anatomy):
    """Each cohort member's random transform, generator state and anatomy."""
    subjects = []
    for _ in range(n):
        transform = random_rigid_scale(rng, rotation_deg=rotation_deg, scale=scale)
        size = max(0.5, rng.normal(*head_size))
        transform[:3, :3] /= size  # sampling further out = a smaller brain
        subject = {"transform": transform, "state": rng.integers(2**32)}
        if anatomy:
            atrophy = rng.uniform()
            subject.update(
                thinning_mm=1.5 * atrophy * rng.uniform(0.6, 1.0),
                ventricle_mm=3.0 * atrophy + rng.uniform(-1.0, 1.0),
                asymmetry=rng.uniform(-0.03, 0.03),
            )
        subjects.append(subject)
    return subjects


def _build_volumes(subjects, shape, workers, progress):
    """The members' volumes, built in ``workers`` processes (forked: they
    share the template loaded for the cohort)."""
    from tqdm.auto import tqdm

    volumes = np.empty((len(subjects), *shape), np.float32)
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing

        pool = ProcessPoolExecutor(workers, multiprocessing.get_context("fork"))
        made = pool.map(_cohort_volume, subjects, chunksize=1)
    else:
        pool, made = None, map(_cohort_volume, subjects)
    for i, volume in enumerate(
        tqdm(made, total=len(subjects), desc="MNI cohort", disable=not progress)
    ):
        volumes[i] = volume
    if pool is not None:
        pool.shutdown()
    return volumes


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
    head_size=(1.0, 0.0),
    anatomy=False,
    intensity=True,
    indices=None,
    workers=1,
    progress=False,
):
    """``n`` augmented MNI-template volumes on a model grid.

    Parameters
    ----------
    n : int
    shape : tuple of 3 int, optional
        Grid shape; the grid is centred on the brain.
    voxel_size : float or tuple of 3 float, optional
        Grid voxel size (mm).
    rng : int or numpy Generator, optional
    displacement_mm, smoothness_mm : float, optional
        Largest elastic displacement and its smoothness.
    rotation_deg, scale : float, optional
        Largest random rotation per axis and per-axis scaling (fraction).
    head_size : (float, float), optional
        Mean and standard deviation of a global size factor (MNI space
        is larger than most heads: 0.9 gives brains of about 1400 ml).
    anatomy : bool, optional
        Add the variation of :class:`~dipy_ext.data.anatomy.TemplateAnatomy`
        (cortical thinning, ventricle size, asymmetry), correlated through
        a common atrophy level as with age.
    intensity : bool, optional
        Bias field, contrast change and noise.
    indices : sequence of int, optional
        Build only these members of the ``n``-volume cohort (the same
        volumes as in the whole cohort: a held-out part without the rest).
    workers : int, optional
        Processes that build volumes in parallel (same volumes whatever
        the number).
    progress : bool, optional

    Returns
    -------
    volumes : ndarray (n or len(indices), *shape), float32 in [0, 1]
    affine : ndarray (4, 4)
        The grid's voxel-to-world affine (MNI space, centred on the brain).
    """
    rng = np.random.default_rng(rng)
    t1, affine, mask = load_mni_template()
    vox = np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,))
    idx = np.argwhere(mask)
    centre = affine[:3, :3] @ ((idx.min(0) + idx.max(0)) / 2) + affine[:3, 3]
    grid = grid_affine(shape, vox, centre)
    # every random choice is drawn here, in order: the volumes do not
    # depend on the number of workers
    subjects = _draw_subjects(n, rng, rotation_deg, scale, head_size, anatomy)
    if indices is not None:
        subjects = [subjects[i] for i in indices]
    global _COHORT
    _COHORT = {
        "t1": t1,
        "affine": affine,
        "mask": mask,
        "shape": tuple(shape),
        "grid": grid,
        "anatomy": TemplateAnatomy(t1, mask, *load_mni_tissues()) if anatomy else None,
        # anti-aliasing for the 1 mm -> voxel_size resampling
        "sigma": np.maximum(0, (vox - 1) / 2),
        "warp": {"displacement_mm": displacement_mm, "smoothness_mm": smoothness_mm},
        "intensity": intensity,
    }
    try:
        volumes = _build_volumes(subjects, shape, workers, progress)
    finally:
        _COHORT = None
    return volumes, grid


_COHORT = None  # the template shared with forked workers while a cohort is made


def _cohort_volume(subject):
    c = _COHORT
    state = np.random.default_rng(subject["state"])
    t1 = c["t1"]
    if c["anatomy"] is not None and subject["thinning_mm"] > 0:
        t1 = c["anatomy"].thinned(subject["thinning_mm"], state)
    if np.any(c["sigma"] > 0.3):
        t1 = ndimage.gaussian_filter(t1, c["sigma"])
    coords = warp_coordinates(
        c["affine"],
        c["shape"],
        c["grid"],
        transform=subject["transform"],
        rng=state,
        coarse=4,
        **c["warp"],
    )
    if c["anatomy"] is not None:
        coords = c["anatomy"].displace(
            coords,
            ventricle_mm=subject["ventricle_mm"],
            asymmetry=subject["asymmetry"],
        )
    v = ndimage.map_coordinates(t1, coords, order=1, mode="constant")
    m = ndimage.map_coordinates(c["mask"].astype(np.float32), coords, order=1)
    v = (v * (m > 0.5)).reshape(c["shape"])
    if c["intensity"]:
        v = random_intensity(v, state)
    low, high = intensity_range(v, v > 0)
    return np.clip((v - low) / (high - low), 0, 1).astype(np.float32)
