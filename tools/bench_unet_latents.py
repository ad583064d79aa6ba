"""Training step time and memory of a diffusion UNet on latents of one size.

Screens UNet layouts for the 4x autoencoder's 32^3 x 6 latents (issue 18):
each run builds one UNet, trains it 4 steps on random latents (the first,
which traces the graph, not counted) and prints its parameters, median
seconds per step and the process's peak memory.

    python tools/bench_unet_latents.py --channels 16,32,64,128 --attention 0,0,1,1
"""

import argparse
import json
import resource
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", default="32,64,128")
    p.add_argument("--attention", default="0,1,1", help="1 = attention at a level")
    p.add_argument("--latent-shape", type=int, nargs=3, default=(32, 32, 32))
    p.add_argument("--latent-channels", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)
    import dipy_ext.nn._backend  # noqa: F401, I001 - oneDNN on before keras
    from dipy_ext.nn.unet import build_unet

    channels = tuple(int(c) for c in args.channels.split(","))
    attention = tuple(a == "1" for a in args.attention.split(","))
    shape, batch = tuple(args.latent_shape), args.batch
    unet = build_unet(
        shape,
        args.latent_channels,
        channels=channels,
        num_res_blocks=1,
        attention_levels=attention,
        condition_dim=2,
    )
    unet.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape, args.latent_channels)).astype("float32")
    inputs = [
        x,
        rng.uniform(0, 1000, batch).astype("float32"),
        rng.standard_normal((batch, 2)).astype("float32"),
        np.zeros(batch, "float32"),
    ]
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        unet.train_on_batch(inputs, x)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        json.dumps(
            {
                "channels": channels,
                "attention": attention,
                "params": unet.count_params(),
                "step_seconds": float(np.median(times[1:])),
                "peak_gib": peak,
            }
        )
    )


if __name__ == "__main__":
    main()
