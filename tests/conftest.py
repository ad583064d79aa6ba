"""Shared fixtures: small phantoms and one tiny trained VQ-VAE per session."""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as dipy_ext.nn does

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
