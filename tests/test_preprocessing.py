import numpy as np
import numpy.testing as npt
import pytest

from dipy_ext.data import synthetic_brain_phantom
from dipy_ext.preprocessing import (
    GridParams,
    grid_affine,
    postprocess,
    preprocess,
    skull_stripped,
)


@pytest.fixture(scope="module")
def head():
    """A 1 mm phantom (48^3) with a world affine, and its brain mask."""
    volume = synthetic_brain_phantom((48, 48, 48), rng=3, noise=0.0, bias=0.0) * 900
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-24, -20, -30]
    return volume, affine, volume > 0


def test_preprocess_shape_range_and_background(head):
    volume, affine, mask = head
    out, params = preprocess(
        volume, affine, mask=mask, shape=(24, 24, 24), voxel_size=2
    )
    assert out.shape == (24, 24, 24)
    assert out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert out.max() > 0.9  # the 99.5th percentile maps to 1
    assert out[0, 0, 0] == 0  # background stays 0
    npt.assert_allclose(np.diag(params.grid_affine)[:3], [2, 2, 2])
    # grid centred on the brain: its centre voxel maps to the bbox centre
    centre = params.grid_affine @ [11.5, 11.5, 11.5, 1]
    idx = np.argwhere(mask)
    bbox_centre = affine @ [*((idx.min(0) + idx.max(0)) / 2), 1]
    npt.assert_allclose(centre[:3], bbox_centre[:3], atol=1e-6)


def test_roundtrip_returns_to_input_space(head):
    """A grid on the input's own voxels, no clipping: the inverse is exact."""
    volume, affine, mask = head
    centre = (affine @ [23.5, 23.5, 23.5, 1])[:3]
    out, params = preprocess(
        volume,
        affine,
        mask=mask,
        shape=(48, 48, 48),
        voxel_size=1,
        percentile=100,
        center=centre,
    )
    back = postprocess(out, params)
    assert back.shape == volume.shape
    npt.assert_allclose(back, volume, atol=1e-3 * volume.max())


def test_downsampled_roundtrip_is_close(head):
    volume, affine, mask = head
    out, params = preprocess(
        volume, affine, mask=mask, shape=(24, 24, 24), voxel_size=2
    )
    back = postprocess(out, params)
    corr = np.corrcoef(back[mask], volume[mask])[0, 1]
    assert corr > 0.9


def test_orientation_does_not_change_model_volume(head):
    """The same brain stored flipped (LAS) lands identically on the RAS grid."""
    volume, affine, mask = head
    flipped = volume[::-1].copy()
    flip_affine = affine.copy()
    flip_affine[0, 0] = -1
    flip_affine[0, 3] = affine[0, 3] + volume.shape[0] - 1
    a, _ = preprocess(volume, affine, shape=(24, 24, 24), voxel_size=2)
    b, _ = preprocess(flipped, flip_affine, shape=(24, 24, 24), voxel_size=2)
    npt.assert_allclose(a, b, atol=1e-4)


def test_rigid_alignment_to_reference(head):
    volume, affine, _ = head
    # the same brain, rotated 12 degrees about z and shifted 3 mm
    angle = np.deg2rad(12)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    rot[:3, 3] = [3, -2, 1]
    moved_affine = rot @ affine
    kw = {"shape": (24, 24, 24), "voxel_size": 2}
    ref, _ = preprocess(volume, affine, **kw)
    unaligned, _ = preprocess(volume, moved_affine, **kw)
    aligned, params = preprocess(volume, moved_affine, reference=(volume, affine), **kw)
    err_unaligned = np.abs(unaligned - ref).mean()
    err_aligned = np.abs(aligned - ref).mean()
    assert err_aligned < 0.35 * err_unaligned
    assert not np.allclose(params.rigid, np.eye(4))


def test_grid_params_roundtrip(head):
    volume, affine, _ = head
    _, params = preprocess(volume, affine, shape=(24, 24, 24), voxel_size=2)
    again = GridParams.from_dict(params.to_dict())
    npt.assert_allclose(again.grid_affine, params.grid_affine)
    assert again.input_shape == params.input_shape
    assert (again.low, again.high) == (params.low, params.high)


def test_grid_affine_centres_grid():
    aff = grid_affine((4, 4, 4), (2, 2, 2), center=(10, 0, -5))
    npt.assert_allclose(aff @ [1.5, 1.5, 1.5, 1], [10, 0, -5, 1])


def test_cropping_is_reported(head, dipy_log):
    volume, affine, _ = head
    preprocess(volume, affine, shape=(8, 8, 8), voxel_size=2)
    assert "cropped" in dipy_log.text
    dipy_log.clear()
    preprocess(volume, affine, shape=(32, 32, 32), voxel_size=2)
    assert "cropped" not in dipy_log.text


def test_4d_single_volume_is_squeezed(head):
    volume, affine, _ = head
    out, _ = preprocess(volume[..., None], affine, shape=(16, 16, 16), voxel_size=3)
    assert out.shape == (16, 16, 16)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v, a, m: (v[..., None].repeat(2, -1), a, None), "3D volume"),
        (lambda v, a, m: (v[0], a, None), "3D volume"),
        (lambda v, a, m: (np.where(m, np.nan, v), a, None), "NaN or Inf"),
        (lambda v, a, m: (np.where(m, np.inf, v), a, None), "NaN or Inf"),
        (lambda v, a, m: (np.zeros_like(v), a, None), "all zero"),
        (lambda v, a, m: (v, a, np.zeros_like(m)), "mask is empty"),
        (lambda v, a, m: (v, a, m[:-1]), "mask shape"),
        (lambda v, a, m: (v, a[:3], None), "4x4"),
        (lambda v, a, m: (v, np.zeros((4, 4)), None), "singular"),
        (lambda v, a, m: (v.tolist(), a, None), "numpy array"),
    ],
)
def test_bad_input_gives_one_line_error(head, change, message):
    volume, affine, mask = change(*head)
    with pytest.raises(ValueError, match=message) as err:
        preprocess(volume, affine, mask=mask, shape=(16, 16, 16), voxel_size=3)
    assert "\n" not in str(err.value)


def test_postprocess_checks_shape(head):
    volume, affine, _ = head
    _, params = preprocess(volume, affine, shape=(16, 16, 16), voxel_size=3)
    with pytest.raises(ValueError, match="grid shape"):
        postprocess(np.zeros((8, 8, 8)), params)


def test_skull_stripped_keeps_the_brain_only():
    """[0, 1], zero outside the largest region above the threshold, holes
    (ventricles) kept, a disconnected speck and a faint rim removed."""
    v = np.full((2, 24, 24, 24), 0.02, np.float32)  # the decoder's faint haze
    v[:, 4:20, 4:20, 4:20] = 0.8
    v[:, 10:14, 10:14, 10:14] = 0.01  # a dark cavity inside: kept
    v[:, 0, 0, 0] = 0.9  # a disconnected speck: removed
    v[0, 6, 6, 6] = 1.4  # overshoot: clipped
    v[1, 8, 8, 8] = -0.1  # undershoot inside a cavity-free region: clipped
    out = skull_stripped(v, 0.05)
    assert out.min() == 0.0 and out.max() == 1.0
    npt.assert_array_equal(out[:, 0, 0, 0], 0.0)
    npt.assert_array_equal(out[:, :4], 0.0)
    npt.assert_allclose(out[:, 11, 11, 11], 0.01)
    assert (out[:, 4:20, 4:20, 4:20] > 0).mean() > 0.95
    npt.assert_array_equal(skull_stripped(np.full((8, 8, 8), 0.01), 0.05), 0.0)


def test_skull_stripped_cuts_a_speck_joined_by_a_thin_strand():
    """Issue 18: specks outside the brain, touching it by a strand, are cut;
    the brain's own thin parts (a 1-voxel cortex fold) are kept."""
    v = np.zeros((1, 32, 32, 32), np.float32)
    v[0, 6:26, 6:26, 6:26] = 0.7  # the brain
    v[0, 16, 16, 26:29] = 0.6  # a 1-voxel strand out of it ...
    v[0, 15:18, 15:18, 29:31] = 0.9  # ... to a speck outside
    v[0, 10, 6:26, 26] = 0.5  # a thin fold on the brain's surface
    out = skull_stripped(v, 0.05)
    npt.assert_array_equal(out[0, 15:18, 15:18, 29:31], 0.0)
    npt.assert_allclose(out[0, 6:26, 6:26, 6:26], 0.7)
    npt.assert_allclose(out[0, 10, 6:26, 26], 0.5)
