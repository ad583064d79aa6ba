"""Shared fixtures: small phantoms, one tiny trained VQ-VAE, and phantom T1
files with tiny models trained on them through the workflows, once per session."""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as dipy_ext.nn does
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as dipy_ext.nn does

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dipy_ext.data import phantom_cohort  # noqa: E402

SHAPE = (32, 32, 32)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)

    @property
    def text(self):
        return "\n".join(r.getMessage() for r in self.records)

    def clear(self):
        self.records.clear()


@pytest.fixture
def dipy_log():
    """Messages sent to DIPY's logger (it does not propagate to caplog)."""
    handler = _Records()
    logger = logging.getLogger("dipy")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture(scope="session")
def phantoms():
    """24 training phantoms at 32^3, half from each atrophy family."""
    return phantom_cohort(24, SHAPE, rng=0, atrophy=np.tile([0.0, 1.0], 12))


@pytest.fixture(scope="session")
def heldout_phantoms():
    return phantom_cohort(4, SHAPE, rng=1000, atrophy=[0.0, 1.0, 0.0, 1.0])


@pytest.fixture(scope="session")
def trained_vqvae(phantoms, tmp_path_factory):
    """A tiny VQ-VAE (4x with pixel shuffle, 8^3 latents) trained briefly.

    Returns its file path and training history.

    Tests load their own copy from the file, so none can disturb another.
    """
    pytest.importorskip("keras")
    from dipy_ext.nn.vqvae import VQVAE3D

    vq = VQVAE3D(
        input_shape=SHAPE,
        channels=(16, 32),
        num_res_blocks=1,
        quantizer="vq",
        output_stage="subpixel",
        num_embeddings=64,
        embedding_dim=4,
        seed=0,
    )
    history = vq.fit(phantoms, epochs=12, batch_size=4, learning_rate=2e-3)
    path = tmp_path_factory.mktemp("models") / "vqvae.npz"
    vq.save(path)
    return {"path": path, "history": history.history}


@pytest.fixture(scope="session")
def t1_folder(tmp_path_factory):
    """Six phantom 'T1' files at 2 mm (32^3) with masks, in scanner units."""
    folder = tmp_path_factory.mktemp("t1")
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -31
    for i, v in enumerate(phantom_cohort(6, (32, 32, 32), rng=0, atrophy=[0, 1] * 3)):
        nib.save(nib.Nifti1Image(v * 800, affine), folder / f"sub{i}_T1w.nii.gz")
        nib.save(
            nib.Nifti1Image((v > 0).astype(np.uint8), affine),
            folder / f"sub{i}_mask.nii.gz",
        )
    (folder / "conditions.csv").write_text(
        "file,age,sex\n"
        + "".join(f"sub{i}_T1w.nii.gz,{60 + i},{i % 2}\n" for i in range(6))
    )
    return folder


@pytest.fixture(scope="session")
def trained_files(t1_folder, tmp_path_factory):
    """A tiny VQ-VAE and a tiny conditional LDM trained through the flows."""
    from dipy_ext.workflows.training import (
        TrainLatentDiffusion3DFlow,
        TrainVQVAE3DFlow,
    )

    out = tmp_path_factory.mktemp("models")
    TrainVQVAE3DFlow().run(
        str(t1_folder / "*_T1w.nii.gz"),
        mask_files=str(t1_folder / "*_mask.nii.gz"),
        grid_shape=(16, 16, 16),
        voxel_size=(4.0,),
        channels=(8, 16),
        num_res_blocks=(1,),
        quantizer="vq",
        output_stage="subpixel",
        num_embeddings=16,
        embedding_dim=4,
        epochs=2,
        batch_size=2,
        validation_fraction=0.2,
        out_dir=str(out),
    )
    TrainLatentDiffusion3DFlow().run(
        str(t1_folder / "*_T1w.nii.gz"),
        str(out / "vqvae3d.npz"),
        conditions_file=str(t1_folder / "conditions.csv"),
        channels=(8, 16),
        attention_levels=(0, 1),
        num_res_blocks=1,
        num_train_timesteps=50,
        epochs=2,
        batch_size=4,
        validation_fraction=0.0,
        out_dir=str(out),
    )
    return out
