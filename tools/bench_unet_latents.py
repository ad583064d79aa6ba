"""Training step time and memory of a diffusion UNet on latents of one size.

Screens UNet layouts for the 4x autoencoder's 32^3 x 6 latents (issue 18):
each run builds one UNet, trains it on random latents and prints its
parameters, median seconds per step (the first, which traces the graph, not
counted) and the process's peak memory (``bench_autoencoder.unet_probe``).

    python tools/bench_unet_latents.py --channels 16,32,64,128 --attention 0,0,1,1
"""

import argparse
import json

from bench_autoencoder import unet_probe


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", default="32,64,128")
    p.add_argument("--attention", default="0,1,1", help="1 = attention at a level")
    p.add_argument("--latent-shape", type=int, nargs=3, default=(32, 32, 32))
    p.add_argument("--latent-channels", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)
    channels = tuple(int(c) for c in args.channels.split(","))
    attention = tuple(a == "1" for a in args.attention.split(","))
    cost = unet_probe(
        tuple(args.latent_shape),
        args.latent_channels,
        args.batch,
        args.steps,
        channels=channels,
        attention_levels=attention,
    )
    print(json.dumps({"channels": channels, "attention": attention, **cost}))


if __name__ == "__main__":
    main()
