"""The model code on Keras' PyTorch backend: both classes fit, predict and
save there, and their files give the same outputs on TensorFlow.

PyTorch is not part of the ``test`` extra (PyPI's Linux wheel carries CUDA
libraries of several GB): the README's test command, which CI runs, installs
its CPU build beside it; without PyTorch this module is skipped.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import numpy.testing as npt
import pytest

pytest.importorskip("torch")
pytest.importorskip("keras")
pytestmark = pytest.mark.slow

TORCH_TRAINING = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    from dipy_ext.data import phantom_cohort
    from dipy_ext.nn import LatentDiffusion3D, VQVAE3D

    assert keras.backend.backend() == "torch"
    out = sys.argv[1]
    x = phantom_cohort(4, (16, 16, 16), rng=0)
    vq = VQVAE3D(input_shape=(16, 16, 16), channels=(8, 16), quantizer="vq",
                 output_stage="subpixel", num_embeddings=16,
                 embedding_dim=4, seed=0, verbose=False)
    vq.fit(x, epochs=2, batch_size=2, adversarial_weight=0.1, adversarial_start=0)
    ldm = LatentDiffusion3D(vq, channels=(8, 16), attention_levels=(False, True),
                            num_res_blocks=1, num_train_timesteps=20,
                            condition_dim=1, condition_names=["size"], seed=0,
                            verbose=False)
    history = ldm.fit(x, conditions=[[1.0], [2.0], [3.0], [4.0]], epochs=2,
                      batch_size=2)
    assert np.isfinite(history.history["loss"]).all()
    ldm.save(out + "/ldm.npz")
    np.save(out + "/recon.npy", vq.predict(x))
    np.save(out + "/samples.npy", ldm.predict(2, conditions=[[1.5], [3.5]],
                                              num_inference_steps=4, seed=3))
    """
)


def test_torch_trains_and_files_load_on_tensorflow(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    subprocess.run(
        [sys.executable, "-c", TORCH_TRAINING, str(tmp_path)], env=env, check=True
    )
    from dipy_ext.data import phantom_cohort
    from dipy_ext.nn import LatentDiffusion3D

    ldm = LatentDiffusion3D.load(tmp_path / "ldm.npz")
    x = phantom_cohort(4, (16, 16, 16), rng=0)
    npt.assert_allclose(
        ldm.vqvae.predict(x), np.load(tmp_path / "recon.npy"), atol=1e-4
    )
    samples = ldm.predict(2, conditions=[[1.5], [3.5]], num_inference_steps=4, seed=3)
    npt.assert_allclose(samples, np.load(tmp_path / "samples.npy"), atol=1e-4)
