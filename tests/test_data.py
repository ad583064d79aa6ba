import gzip

import nibabel as nib
import numpy as np
import numpy.testing as npt
import pytest

from dipy_ext.data import (
    find_nifti_files,
    load_cohort_cache,
    load_volume,
    load_volumes,
    phantom_cohort,
    preprocess_cohort,
    synthetic_brain_phantom,
    ventricle_fraction,
)


def test_phantom_shape_range_and_seed():
    a = synthetic_brain_phantom((24, 28, 20), rng=1)
    b = synthetic_brain_phantom((24, 28, 20), rng=1)
    c = synthetic_brain_phantom((24, 28, 20), rng=2)
    assert a.shape == (24, 28, 20) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    npt.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01
    assert a[0, 0, 0] == 0  # skull-stripped: background is 0


def test_phantom_t1_contrast():
    vol, labels = synthetic_brain_phantom(
        (48, 48, 48), rng=0, noise=0, bias=0, return_labels=True
    )
    means = [vol[labels == k].mean() for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]  # CSF < GM < WM
    assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_atrophy_families_are_separable():
    small = phantom_cohort(6, (32, 32, 32), rng=0, atrophy=0.0)
    large = phantom_cohort(6, (32, 32, 32), rng=1, atrophy=1.0)
    assert ventricle_fraction(small).max() < ventricle_fraction(large).min()


def test_phantom_rejects_tiny_shape():
    with pytest.raises(ValueError, match="shape"):
        synthetic_brain_phantom((4, 4, 4))


def _write(path, data, affine=None):
    nib.save(
        nib.Nifti1Image(
            np.asarray(data, np.float32), np.eye(4) if affine is None else affine
        ),
        path,
    )
    return path


@pytest.fixture
def nifti_folder(tmp_path):
    vols = phantom_cohort(3, (20, 20, 20), rng=0)
    for i, v in enumerate(vols):
        _write(tmp_path / f"sub{i}_T1w.nii.gz", v * 1000)
        _write(tmp_path / f"sub{i}_mask.nii", (v > 0).astype(np.float32))
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_find_nifti_files(nifti_folder):
    assert len(find_nifti_files(nifti_folder)) == 6
    t1 = find_nifti_files(str(nifti_folder / "*_T1w.nii.gz"))
    assert [p.name for p in t1] == [f"sub{i}_T1w.nii.gz" for i in range(3)]
    both = find_nifti_files([nifti_folder / "sub0_T1w.nii.gz", nifti_folder / "*mask*"])
    assert len(both) == 4


def test_find_nifti_files_errors(nifti_folder):
    with pytest.raises(ValueError, match="no NIfTI file"):
        find_nifti_files(str(nifti_folder / "*.mgz"))
    with pytest.raises(ValueError, match="expected NIfTI"):
        find_nifti_files(nifti_folder / "notes.txt")


def test_load_volume_and_errors(tmp_path):
    vol = np.random.default_rng(0).random((8, 9, 10)) + 1
    v, aff = load_volume(_write(tmp_path / "a.nii.gz", vol[..., None]))
    assert v.shape == (8, 9, 10)  # 4D with one volume: squeezed
    with pytest.raises(ValueError, match="3D volume"):
        load_volume(_write(tmp_path / "b.nii.gz", np.stack([vol, vol], -1)))
    bad = tmp_path / "c.nii.gz"
    bad.write_bytes(gzip.compress(b"this is not nifti"))
    with pytest.raises(ValueError, match="cannot read") as err:
        load_volume(bad)
    assert "\n" not in str(err.value)


def test_load_volumes_pairs_masks(nifti_folder):
    items = list(
        load_volumes(
            str(nifti_folder / "*_T1w.nii.gz"), masks=str(nifti_folder / "*_mask.nii")
        )
    )
    assert len(items) == 3
    path, data, affine, mask = items[0]
    assert mask.dtype == bool and mask.shape == data.shape
    with pytest.raises(ValueError, match="one mask per volume"):
        list(
            load_volumes(
                str(nifti_folder / "*_T1w.nii.gz"), masks=nifti_folder / "sub0_mask.nii"
            )
        )


def test_preprocess_cohort_memory_and_cache(nifti_folder, tmp_path):
    grid = {"shape": (16, 16, 16), "voxel_size": 1.5}
    vols, params = preprocess_cohort(
        str(nifti_folder / "*_T1w.nii.gz"), progress=False, **grid
    )
    assert vols.shape == (3, 16, 16, 16) and len(params) == 3
    cache = tmp_path / "cohort.npy"
    cached, _ = preprocess_cohort(
        str(nifti_folder / "*_T1w.nii.gz"), cache_file=cache, progress=False, **grid
    )
    assert isinstance(cached, np.memmap)
    npt.assert_allclose(cached, vols)
    again, params2 = load_cohort_cache(cache)
    npt.assert_allclose(again, vols)
    npt.assert_allclose(params2[1].grid_affine, params[1].grid_affine)


def test_degenerate_training_inputs_named(tmp_path):
    import nibabel as nib

    from dipy_ext.data.io import load_volumes

    nib.save(
        nib.Nifti1Image(np.full((16, 16, 16), 5.0, np.float32), np.eye(4)),
        tmp_path / "flat.nii.gz",
    )
    with pytest.raises(ValueError, match=r"flat.nii.gz' is constant \(5\)"):
        list(load_volumes(tmp_path / "flat.nii.gz"))
    nib.save(
        nib.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4)),
        tmp_path / "tiny.nii.gz",
    )
    with pytest.raises(ValueError, match=r"tiny.nii.gz' is 3x3x3 voxels"):
        list(load_volumes(tmp_path / "tiny.nii.gz"))
