"""The model code on Keras' JAX backend (the lent GPU machines have JAX, not
TensorFlow): adversarial patch training with resume state, and model files
that load on TensorFlow with the same outputs."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import numpy.testing as npt
import pytest

pytest.importorskip("jax")
pytest.importorskip("keras")
pytestmark = pytest.mark.slow

JAX_TRAINING = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    from dipy_ext.data import phantom_cohort
    from dipy_ext.nn import VQVAE3D

    assert keras.backend.backend() == "jax"
    out = sys.argv[1]
    x = phantom_cohort(4, (16, 16, 16), rng=0)
    vq = VQVAE3D(input_shape=(16, 16, 16), channels=(8, 16), quantizer="vq",
                 output_stage="subpixel", num_embeddings=16,
                 embedding_dim=4, seed=0, verbose=False)
    history = vq.fit(x, epochs=6, batch_size=2, patch_shape=(8, 8, 8),
                     structure_losses={"gradient": 1.0}, adversarial_weight=0.1,
                     adversarial_start=0, checkpoint_dir=out + "/ckpt")
    accuracy = history.history["disc_accuracy"]
    assert np.isfinite(history.history["loss"]).all()
    assert max(accuracy) > 0.5, accuracy  # the discriminator learns
    vq.save(out + "/vq.npz")
    np.save(out + "/recon.npy", vq.predict(x))
    """
)


def test_jax_trains_adversarially_and_files_load_on_tensorflow(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    subprocess.run(
        [sys.executable, "-c", JAX_TRAINING, str(tmp_path)], env=env, check=True
    )
    from dipy_ext.data import phantom_cohort
    from dipy_ext.nn import VQVAE3D

    vq = VQVAE3D.load(tmp_path / "vq.npz")
    x = phantom_cohort(4, (16, 16, 16), rng=0)
    npt.assert_allclose(vq.predict(x), np.load(tmp_path / "recon.npy"), atol=1e-4)
