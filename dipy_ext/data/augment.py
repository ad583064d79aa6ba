"""Random spatial and intensity augmentations of a brain volume.

Used to build training cohorts from a single template (the embedded default
model is trained on deformed variants of the MNI152 template): a random
affine and a smooth elastic deformation sampled straight onto the model
grid (one interpolation), then a smooth bias field, a gamma contrast change
and noise.
"""

import numpy as np
from scipy import ndimage


def smooth_field(rng, shape, sigma, amplitude):
    """Gaussian-filtered white noise rescaled to a given maximum amplitude."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field * (amplitude / (np.abs(field).max() + 1e-12))


def random_rigid_scale(rng, *, rotation_deg=5.0, scale=0.06, translation_mm=3.0):
    """Random 4x4 world transform: small rotations, scaling and shift."""
    angles = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    out = np.eye(4)
    out[:3, :3] = rz @ ry @ rx @ np.diag(1 + rng.uniform(-scale, scale, 3))
    out[:3, 3] = rng.uniform(-translation_mm, translation_mm, 3)
    return out


def warp_coordinates(
    affine,
    grid_shape,
    grid_affine,
    *,
    transform=None,
    displacement_mm=0.0,
    smoothness_mm=20.0,
    rng=None,
    coarse=1,
):
    """Voxel coordinates in a volume (``affine``) of each grid voxel, through
    a random affine + elastic warp: ``(3, prod(grid_shape))``.

    Each grid voxel's world position is moved by ``transform`` (4x4, world
    to world, about the grid centre) and by a smooth random displacement of
    at most ``displacement_mm``. ``coarse`` > 1 draws the displacement on a
    grid that much coarser and interpolates it (the same smoothness, far
    less time on large grids).
    """
    rng = np.random.default_rng(rng)
    grid_shape = tuple(grid_shape)
    idx = np.indices(grid_shape, dtype=np.float64).reshape(3, -1)
    world = grid_affine[:3, :3] @ idx + grid_affine[:3, 3:4]
    if transform is not None:
        centre = (
            grid_affine[:3, :3] @ ((np.asarray(grid_shape) - 1) / 2)
            + grid_affine[:3, 3]
        )
        world = (
            transform[:3, :3] @ (world - centre[:, None])
            + centre[:, None]
            + transform[:3, 3:4]
        )
    if displacement_mm > 0:
        vox = np.sqrt((grid_affine[:3, :3] ** 2).sum(axis=0)).mean()
        sigma = smoothness_mm / vox
        small = tuple(-(-s // coarse) for s in grid_shape)
        for axis in range(3):
            field = smooth_field(rng, small, sigma / coarse, displacement_mm)
            if coarse > 1:
                field = ndimage.map_coordinates(
                    field, idx / coarse, order=1, mode="nearest"
                )
            world[axis] += field.ravel()
    inv = np.linalg.inv(affine)
    return inv[:3, :3] @ world + inv[:3, 3:4]


def warp_onto_grid(volume, affine, grid_shape, grid_affine, *, order=1, **warp):
    """Sample ``volume`` on a grid through a random affine + elastic warp.

    ``warp`` are the arguments of :func:`warp_coordinates`.
    """
    coords = warp_coordinates(affine, grid_shape, grid_affine, **warp)
    out = ndimage.map_coordinates(volume, coords, order=order, mode="constant")
    return out.reshape(tuple(grid_shape)).astype(np.float32)


def random_intensity(volume, rng, *, bias=0.15, gamma=(0.8, 1.25), noise=(0.005, 0.03)):
    """Bias field, gamma contrast change and Gaussian noise on a [0, 1] volume.

    The background (0) stays 0 so the volume stays skull-stripped.
    """
    rng = np.random.default_rng(rng)
    brain = volume > 0
    out = np.clip(volume, 0, None) ** rng.uniform(*gamma)
    if bias > 0:
        sigma = max(volume.shape) / 4
        out = out * (1 + smooth_field(rng, volume.shape, sigma, rng.uniform(0, bias)))
    out = out + rng.uniform(*noise) * rng.standard_normal(volume.shape)
    return np.clip(out * brain, 0, None).astype(np.float32)
