"""NIfTI volumes in, model-grid cohorts out.

Inputs can be a file, a folder (every ``.nii``/``.nii.gz`` in it), a glob, or a
list of these. Volumes are read one at a time (generators), and a cohort can
be preprocessed into a memory-mapped ``.npy`` file so that training on a large
cohort never holds it all in memory.
"""

import glob
import json
import os
from pathlib import Path

from dipy.utils.logging import logger
import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from dipy_ext._files import atomic_path
from dipy_ext.preprocessing import GridParams, check_volume, preprocess

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path):
    """Whether a path names a NIfTI file by its suffix."""
    return str(path).endswith(NIFTI_SUFFIXES)


def find_nifti_files(inputs):
    """Sorted NIfTI paths from a file, a folder, a glob, or a list of these.

    Raises
    ------
    ValueError
        If nothing matches, or a matched file is not ``.nii``/``.nii.gz``.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            # hidden files (an editor's or a killed writer's) are not inputs
            found = sorted(
                p for p in item.iterdir() if is_nifti(p) and not p.name.startswith(".")
            )
        elif item.exists():
            found = [item]
        else:
            found = [Path(p) for p in sorted(glob.glob(str(item)))]
        if not found:
            raise ValueError(f"no NIfTI file (.nii or .nii.gz) matches '{item}'")
        paths.extend(found)
    bad = [str(p) for p in paths if not is_nifti(p)]
    if bad:
        raise ValueError(f"expected NIfTI files (.nii or .nii.gz), got {bad[0]}")
    return paths


def load_volume(path):
    """Read one 3D NIfTI volume as ``(data float32, affine)``.

    A 4D file holding a single volume is squeezed; any other 4D file, an
    unreadable file or an invalid volume raises a one-line ``ValueError``.
    """
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many types for broken files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"cannot read '{path}' as a NIfTI volume: {msg}") from e
    return check_volume(data, name=f"'{path}'"), img.affine


MIN_VOXELS_PER_AXIS = 8


def check_image(data, path):
    """Refuse a volume that cannot be a brain image: constant, or tiny."""
    if min(data.shape) < MIN_VOXELS_PER_AXIS:
        raise ValueError(
            f"'{path}' is {data.shape[0]}x{data.shape[1]}x{data.shape[2]} voxels: "
            f"a brain image needs at least {MIN_VOXELS_PER_AXIS} per axis"
        )
    if data.min() == data.max():
        raise ValueError(f"'{path}' is constant ({data.min():g}): it holds no image")


def load_volumes(inputs, *, masks=None):
    """Yield ``(path, data, affine, mask)`` for each input volume, lazily.

    Parameters
    ----------
    inputs : str, Path or list
        Files, folders or globs (see :func:`find_nifti_files`).
    masks : str, Path or list, optional
        Brain masks, matched to the inputs by sorted order; there must be as
        many masks as volumes. ``mask`` is None when not given.
    """
    paths = find_nifti_files(inputs)
    mask_paths = [None] * len(paths) if masks is None else find_nifti_files(masks)
    if len(mask_paths) != len(paths):
        raise ValueError(
            f"expected one mask per volume: {len(paths)} volumes, "
            f"{len(mask_paths)} masks"
        )
    for path, mask_path in zip(paths, mask_paths):
        data, affine = load_volume(path)
        check_image(data, path)
        mask = None if mask_path is None else load_volume(mask_path)[0] > 0
        yield path, data, affine, mask


def preprocess_cohort(inputs, *, masks=None, cache_file=None, progress=True, **grid):
    """Load and preprocess a cohort of NIfTI volumes onto one model grid.

    Parameters
    ----------
    inputs, masks
        As for :func:`load_volumes`.
    cache_file : str or Path, optional
        Write the cohort to this ``.npy`` file as it is processed, and return a
        read-only memory map of it, so memory holds one volume at a time. A
        JSON file beside it (same name, ``.json``) keeps each volume's path
        and :class:`~dipy_ext.preprocessing.GridParams`. Without it, the
        cohort is returned in memory.
    progress : bool, optional
        Show a progress bar.
    **grid
        Keywords for :func:`~dipy_ext.preprocessing.preprocess` (``shape``,
        ``voxel_size``, ``reference``, ...).

    Returns
    -------
    volumes : ndarray (N, X, Y, Z), float32 (a memmap with ``cache_file``)
    params : list of GridParams
    """
    paths = find_nifti_files(inputs)
    volumes = None
    params = []
    items = load_volumes(paths, masks=masks)
    for i, (path, data, affine, mask) in enumerate(
        tqdm(
            items,
            total=len(paths),
            desc="preprocess",
            disable=None if progress else True,  # None: off when not a terminal
        )
    ):
        model_volume, p = preprocess(data, affine, mask=mask, **grid)
        if volumes is None:
            shape = (len(paths), *model_volume.shape)
            volumes = _allocate(shape, cache_file)
        volumes[i] = model_volume
        params.append(p)
        logger.debug(f"preprocessed {path}")
    if cache_file is not None:
        volumes.flush()
        meta = [{"path": str(p), **q.to_dict()} for p, q in zip(paths, params)]
        # the JSON marks the cache complete: written last, in one step
        with atomic_path(Path(cache_file).with_suffix(".json")) as tmp:
            Path(tmp).write_text(json.dumps(meta))
        volumes = np.load(cache_file, mmap_mode="r")
    return volumes, params


def _allocate(shape, cache_file):
    """The cohort array; with a cache file, a memory map whose disk space is
    reserved first, so a full disk is a clear error now rather than a crash
    (SIGBUS) when a page of the map cannot be written later."""
    if cache_file is None:
        return np.zeros(shape, np.float32)
    cache_file = Path(cache_file)
    cache_file.with_suffix(".json").unlink(missing_ok=True)  # not complete yet
    volumes = np.lib.format.open_memmap(
        cache_file, mode="w+", dtype=np.float32, shape=shape
    )
    if hasattr(os, "posix_fallocate"):
        try:
            with open(cache_file, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, os.path.getsize(cache_file))
        except OSError as e:
            del volumes
            cache_file.unlink(missing_ok=True)
            raise OSError(
                e.errno,
                f"cannot reserve {np.prod(shape) * 4 / 2**30:.2f} GiB for the "
                f"cohort cache '{cache_file}': {e.strerror}",
            ) from e
    return volumes


def load_cohort_cache(cache_file):
    """Read a cohort written by :func:`preprocess_cohort` (memory-mapped)."""
    cache_file = Path(cache_file)
    meta = json.loads(cache_file.with_suffix(".json").read_text())
    return np.load(cache_file, mmap_mode="r"), [GridParams.from_dict(m) for m in meta]
