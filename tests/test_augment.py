import numpy as np
import numpy.testing as npt
import pytest

from dipy_ext.data import synthetic_brain_phantom
from dipy_ext.data.augment import (
    random_intensity,
    random_rigid_scale,
    smooth_field,
    warp_onto_grid,
)
from dipy_ext.preprocessing import grid_affine


def test_smooth_field_amplitude_and_smoothness():
    rng = np.random.default_rng(0)
    f = smooth_field(rng, (32, 32, 32), 4, 2.5)
    assert np.abs(f).max() == pytest.approx(2.5)
    # smooth: neighbouring voxels differ by a fraction of the amplitude (white
    # noise scaled the same way differs by up to twice the amplitude)
    assert np.abs(np.diff(f, axis=0)).max() < 0.3 * 2.5


def test_identity_warp_reproduces_volume():
    vol = synthetic_brain_phantom((24, 24, 24), rng=0)
    aff = grid_affine((24, 24, 24), (2, 2, 2))
    out = warp_onto_grid(vol, aff, (24, 24, 24), aff)
    npt.assert_allclose(out, vol, atol=1e-5)


def test_random_warp_changes_but_keeps_the_brain():
    vol = synthetic_brain_phantom((24, 24, 24), rng=0)
    aff = grid_affine((24, 24, 24), (2, 2, 2))
    rng = np.random.default_rng(1)
    out = warp_onto_grid(
        vol,
        aff,
        (24, 24, 24),
        aff,
        transform=random_rigid_scale(rng),
        displacement_mm=4,
        rng=rng,
    )
    assert np.abs(out - vol).mean() > 0.01
    assert abs((out > 0.05).mean() - (vol > 0.05).mean()) < 0.1  # similar size


def test_rigid_scale_is_near_identity():
    m = random_rigid_scale(np.random.default_rng(2), rotation_deg=5, scale=0.05)
    assert np.abs(m[:3, :3] - np.eye(3)).max() < 0.2
    assert abs(np.linalg.det(m[:3, :3]) - 1) < 0.2


def test_random_intensity_keeps_background_zero():
    vol = synthetic_brain_phantom((24, 24, 24), rng=0)
    out = random_intensity(vol, np.random.default_rng(3))
    assert np.all(out[vol == 0] == 0)
    assert out.min() >= 0
    assert np.abs(out - vol)[vol > 0].mean() > 0.005


def test_mni_cohort():
    pytest.importorskip("nilearn")
    from dipy_ext.data.mni import MNI_NOTICE, mni_cohort

    vols, affine = mni_cohort(2, shape=(32, 32, 32), voxel_size=6.0, rng=0)
    assert vols.shape == (2, 32, 32, 32)
    assert vols.min() >= 0 and vols.max() <= 1
    npt.assert_allclose(np.diag(affine)[:3], 6.0)
    assert 0.1 < (vols > 0.05).mean() < 0.6  # a brain inside the box
    assert np.abs(vols[0] - vols[1]).mean() > 0.01  # augmented differently
    # a part of the cohort alone (a held-out set) is the same volumes
    part, _ = mni_cohort(2, shape=(32, 32, 32), voxel_size=6.0, rng=0, indices=[1])
    npt.assert_array_equal(part, vols[1:])
    assert "McGill University" in MNI_NOTICE
