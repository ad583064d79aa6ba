"""Peak memory of VQ-VAE training: whole 128^3 volumes vs 64^3 patches.

Each configuration trains a few steps in a fresh process (so peaks do not
mix) and reports the process's peak resident memory (CPU; on a GPU machine
run with ``KERAS_BACKEND=jax`` and read the device's peak from
``jax.devices()[0].memory_stats()``, which this script prints when present).

    python tools/bench_memory.py            # the default model's autoencoder
    python tools/bench_memory.py --steps 5 --channels 32 64 128
"""

import argparse
import json
import subprocess
import sys
import textwrap

RUN = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    import keras
    from dipy_ext.nn.vqvae import VQVAE3D

    shape, patch, batch, steps, channels = json.loads(sys.argv[1])
    vq = VQVAE3D(input_shape=shape, channels=channels, num_res_blocks=1,
                 quantizer="vq",
                 output_stage="subpixel",
                 num_embeddings=1024, embedding_dim=8, seed=0, verbose=False)
    data = np.random.default_rng(0).random((batch * steps, *shape), np.float32)
    start = time.perf_counter()
    vq.fit(data, epochs=1, batch_size=batch, adversarial_weight=0.02,
           adversarial_start=0, patch_shape=patch)
    seconds = time.perf_counter() - start
    out = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "seconds_incl_compile": seconds, "backend": keras.backend.backend()}
    if keras.backend.backend() == "jax":
        import jax
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            out["device_peak_gib"] = stats["peak_bytes_in_use"] / 2**30
    print(json.dumps(out))
    """
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    args = p.parse_args(argv)
    configs = {
        "128^3 whole volumes, batch 1": [(128, 128, 128), None, 1],
        "128^3 grid, 64^3 patches, batch 2": [(128, 128, 128), (64, 64, 64), 2],
        "128^3 grid, 64^3 patches, batch 8": [(128, 128, 128), (64, 64, 64), 8],
    }
    for name, (shape, patch, batch) in configs.items():
        spec = json.dumps([shape, patch, batch, args.steps, args.channels])
        done = subprocess.run(
            [sys.executable, "-c", RUN, spec], capture_output=True, text=True
        )
        if done.returncode:
            print(f"{name}: failed\n{done.stderr[-2000:]}")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
