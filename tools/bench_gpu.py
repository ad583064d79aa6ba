"""The GPU recipe's numbers: autoencoder training voxels per second, seconds
per 128^3 volume of DDIM-50 sampling, and peak memory.

Runs on whichever Keras backend and device it finds, so the same command
gives the GPU numbers on a GPU machine and the baseline on a CPU:

1. trains the default model's autoencoder layout (channels 32-64-128,
   1024 codes of 8, adversarial loss on) on random volumes of ``--shape``
   (on ``--patch`` crops; 0: whole volumes), ``--batch`` per step, and
   prints voxels per second over the steps after the first (which traces);
2. draws ``--samples`` volumes from the embedded default model (128^3,
   1.5 mm) with DDIM at ``--ddim-steps`` and prints seconds per volume,
   sampling and decoding (after a warm-up volume that traces);
3. prints the device's peak memory where the backend reports it (JAX), and
   the process's peak resident memory.

    KERAS_BACKEND=jax python tools/bench_gpu.py
    KERAS_BACKEND=jax python tools/bench_gpu.py --batch 8 --mixed-precision
    python tools/bench_gpu.py --shape 32 --patch 0 --steps 3 --samples 1
"""

import argparse
import json
import resource

from bench_samplers import timed_synthesis
import numpy as np
from step_timing import step_timer


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, default=128, help="cubic grid side")
    p.add_argument("--patch", type=int, default=64, help="crop side; 0: whole")
    p.add_argument("--batch", type=int, default=2, help="volumes per step")
    p.add_argument("--steps", type=int, default=10, help="training steps")
    p.add_argument("--samples", type=int, default=4, help="volumes to draw")
    p.add_argument("--ddim-steps", type=int, default=50)
    p.add_argument("--mixed-precision", action="store_true", help="bfloat16")
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def device_memory():
    """Peak bytes on the first accelerator where the backend tells (JAX)."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def device_name():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return f"jax {jax.devices()[0].device_kind}"
    return f"{keras.backend.backend()} (see its own device log)"


def training_speed(args):
    from dipy_ext.nn.vqvae import VQVAE3D

    shape = (args.shape,) * 3
    patch = (args.patch,) * 3 if args.patch else None
    vq = VQVAE3D(
        input_shape=shape,
        channels=(32, 64, 128),
        quantizer="vq",
        output_stage="subpixel",
        num_embeddings=1024,
        embedding_dim=8,
        mixed_precision=args.mixed_precision,
        seed=0,
        verbose=False,
    )
    volumes = np.random.default_rng(0).random(
        (args.batch * args.steps, *shape), np.float32
    )
    timer = step_timer()
    vq.fit(
        volumes,
        epochs=1,
        batch_size=args.batch,
        adversarial_weight=0.02,
        adversarial_start=0,
        patch_shape=patch,
        callbacks=[timer],
    )
    seconds = float(np.median(timer.times[1:] or timer.times))
    voxels = args.batch * int(np.prod(patch or shape))
    return {"seconds_per_step": seconds, "voxels_per_second": voxels / seconds}


def sampling_speed(args):
    from dipy_ext.data.default import default_model_path
    from dipy_ext.nn.diffusion import LatentDiffusion3D

    ldm = LatentDiffusion3D.load(
        default_model_path(), mixed_precision=args.mixed_precision, verbose=False
    )
    options = {"sampler": "ddim", "eta": 1.0, "num_inference_steps": args.ddim_steps}
    ldm.predict(1, **options, progress=False)  # traces
    _, sampling, decoding = timed_synthesis(ldm, args.samples, seed=0, **options)
    return {
        "sampling_seconds_per_volume": sampling,
        "decoding_seconds_per_volume": decoding,
        "seconds_per_volume": sampling + decoding,
    }


def main(argv=None):
    args = parse(argv)
    import dipy_ext.nn._backend  # noqa: F401, I001 - oneDNN on before keras

    result = {"device": device_name(), "settings": vars(args)}
    result["training"] = training_speed(args)
    t = result["training"]
    print(
        f"{result['device']}: autoencoder training {t['voxels_per_second']:.3g} "
        f"voxels/s ({t['seconds_per_step']:.3f} s per step of {args.batch} x "
        f"{args.patch or args.shape}^3)",
        flush=True,
    )
    result["sampling"] = sampling_speed(args)
    s = result["sampling"]
    print(
        f"DDIM-{args.ddim_steps}: {s['seconds_per_volume']:.2f} s per 128^3 volume "
        f"(sampling {s['sampling_seconds_per_volume']:.2f}, decoding "
        f"{s['decoding_seconds_per_volume']:.2f})",
        flush=True,
    )
    peak = device_memory()
    result["device_peak_gib"] = None if peak is None else peak / 2**30
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        "peak memory: "
        + ("" if peak is None else f"device {peak / 2**30:.1f} GiB, ")
        + f"process {result['peak_rss_gib']:.1f} GiB"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
