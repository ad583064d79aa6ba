"""Overhead of data-parallel training: MirroredStrategy over 2 logical CPU
devices vs one device, on the same cores, same global batch.

Trains the same VQVAE3D twice from the same seed on one batch of phantom
volumes (every step sees the same batch, so the two runs must agree) and
prints seconds per step of each (the first epoch, which traces, left out),
the overhead, and the largest weight difference after training.

    python tools/bench_distribute.py
    python tools/bench_distribute.py --shape 64 --epochs 6
"""

import argparse
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, default=32, help="cubic grid side")
    p.add_argument("--batch", type=int, default=4, help="global batch = volumes")
    p.add_argument("--epochs", type=int, default=12, help="one step each")
    args = p.parse_args(argv)
    import dipy_ext.nn._backend  # noqa: F401, I001 - oneDNN on before keras
    import keras
    import tensorflow as tf

    from dipy_ext.data import phantom_cohort
    from dipy_ext.nn.vqvae import VQVAE3D

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    shape = (args.shape,) * 3
    data = phantom_cohort(args.batch, shape, rng=0)

    class EpochTimes(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    weights, per_step = {}, {}
    for name, distribute in (("one device", None), ("2 logical devices", strategy)):
        # no dead-code restarts: they draw random batch vectors per replica
        vq = VQVAE3D(
            input_shape=shape,
            channels=(16, 32),
            quantizer="vq",
            output_stage="subpixel",
            num_embeddings=64,
            embedding_dim=4,
            dead_code_threshold=0.0,
            seed=0,
            verbose=False,
        )
        timer = EpochTimes()
        vq.fit(
            data,
            epochs=args.epochs,
            batch_size=args.batch,
            learning_rate=1e-3,
            distribute=distribute,
            callbacks=[timer],
        )
        per_step[name] = np.mean(timer.seconds[1:])
        weights[name] = vq.network.get_weights()
        print(f"{name:18s} {per_step[name]:.3f} s/step", flush=True)
    one, two = per_step.values()
    diff = max(
        float(np.abs(a - b).max()) for a, b in zip(*weights.values(), strict=True)
    )
    print(f"overhead of 2 logical devices: {100 * (two / one - 1):+.0f}%")
    print(f"largest weight difference after training: {diff:.2e}")


if __name__ == "__main__":
    main()
