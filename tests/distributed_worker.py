"""Training runs under tf.distribute, each in its own process.

TensorFlow's devices are fixed when it starts, so the tests in
``test_distribute.py`` run this script in subprocesses:

    python distributed_worker.py mirrored OUT
        2 logical CPU devices: a VQVAE3D trained under MirroredStrategy and
        the same model trained on one device, both saved to OUT.
    python distributed_worker.py data_parallel OUT
        the JAX backend with 2 host devices: the same under
        keras.distribution.DataParallel.
    python distributed_worker.py multi_worker OUT
        one worker of the cluster in TF_CONFIG: trains one epoch, saves its
        weights to OUT/worker_<index>.npz, and the chief its model file.
"""

import json
import os
from pathlib import Path
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402

SHAPE = (16, 16, 16)


def volumes():
    from dipy_ext.data import phantom_cohort

    return phantom_cohort(int(os.environ.get("N", 8)), SHAPE, rng=0)


def tiny_vqvae():
    from dipy_ext.nn.vqvae import VQVAE3D

    # dead-code restarts on (the default threshold): replicas share one choice
    return VQVAE3D(
        input_shape=SHAPE,
        channels=(8, 16),
        quantizer="vq",
        output_stage="subpixel",
        num_embeddings=16,
        embedding_dim=4,
        seed=0,
        verbose=False,
    )


def state(vq):
    return {f"w{i}": w for i, w in enumerate(vq.network.get_weights())}


def mirrored(out):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    data = volumes()
    runs = {}
    for name, distribute in (("single", None), ("mirrored", strategy)):
        vq = tiny_vqvae()
        hist = vq.fit(
            data,
            epochs=int(os.environ.get("EPOCHS", 2)),
            batch_size=int(os.environ.get("BATCH", 4)),
            learning_rate=1e-3,
            distribute=distribute,
            checkpoint_dir=Path(out) / f"backup_{name}",
        )
        np.savez(Path(out) / f"{name}.npz", **state(vq))
        runs[name] = {k: [float(x) for x in v] for k, v in hist.history.items()}
    runs["replicas"] = strategy.num_replicas_in_sync
    runs["ldm"] = latent_diffusion(vq, data, strategy)
    (Path(out) / "history.json").write_text(json.dumps(runs))


def latent_diffusion(vq, data, distribute):
    """A tiny diffusion model trained under ``distribute``: its loss, and
    whether the trained (moving-average) weights came back to the model."""
    from dipy_ext.nn.diffusion import LatentDiffusion3D

    ldm = LatentDiffusion3D(
        vq,
        channels=(8, 16),
        attention_levels=(False, True),
        num_res_blocks=1,
        num_train_timesteps=20,
        seed=0,
        verbose=False,
    )
    before = [w.copy() for w in ldm.unet.get_weights()]
    hist = ldm.fit(data, epochs=2, batch_size=4, distribute=distribute)
    after = ldm.unet.get_weights()
    sample = ldm.predict(1, num_inference_steps=3, seed=0, progress=False)
    return {
        "loss": [float(x) for x in hist.history["loss"]],
        "weights_changed": bool(
            max(np.abs(a - b).max() for a, b in zip(before, after)) > 0
        ),
        "sample_finite": bool(np.isfinite(sample).all()),
    }


def data_parallel(out):
    """JAX, 2 host devices: keras.distribution.DataParallel vs one device."""
    import jax
    import keras

    assert keras.backend.backend() == "jax" and len(jax.devices()) == 2
    data = volumes()
    for name, distribute in (("single", None), ("data_parallel", "data_parallel")):
        vq = tiny_vqvae()
        vq.fit(data, epochs=1, batch_size=4, learning_rate=1e-3, distribute=distribute)
        np.savez(Path(out) / f"{name}.npz", **state(vq))
        # where the trained copy's weights lived: both devices under DataParallel
        devices = vq.trainer.weights[0].value.sharding.device_set
        (Path(out) / f"{name}_devices.txt").write_text(str(len(devices)))


def multi_worker(out):
    from dipy_ext.nn.distribute import is_chief, make_strategy

    make_strategy("multi_worker")  # first: TensorFlow's collectives need it
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    vq = tiny_vqvae()
    vq.fit(
        volumes(),
        epochs=1,
        batch_size=4,
        learning_rate=1e-3,
        distribute="multi_worker",
        checkpoint_dir=Path(out) / "backup",
    )
    np.savez(Path(out) / f"worker_{index}.npz", **state(vq))
    if is_chief():
        vq.save(Path(out) / "vqvae.npz")


if __name__ == "__main__":
    modes = {
        "mirrored": mirrored,
        "multi_worker": multi_worker,
        "data_parallel": data_parallel,
    }
    modes[sys.argv[1]](sys.argv[2])
