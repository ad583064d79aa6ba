"""Realism of a default model's reconstructions (its VQ-VAE).

Reconstructs held-out volumes and prints PSNR, SSIM, the sharpness ratio,
the classifier two-sample test of reconstructions vs real and HMRF tissue
fractions: the ceiling of the realism the model's samples can reach. It
reports the decoder's raw output and, from the same pass of the network,
the output as the model gives it (its ``intensity_map`` and
``background_threshold``; ``--background-threshold`` sets one for a file
without).

    python tools/bench_default_reconstruction.py     # the embedded model
    python tools/bench_default_reconstruction.py \\
        --model scratch/default_model_v2/vqvae.npz \\
        --cohort scratch/default_model_v2/cohort.npy --first 360
"""

import argparse
import json

import numpy as np


def tissue_means(volumes):
    from dipy_ext.metrics.tissue import tissue_fractions

    fractions = [tissue_fractions(v, max_voxels=64**3) for v in volumes]
    return dict(zip(("csf", "gm", "wm"), np.mean(fractions, axis=0).round(3)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default="/tmp/dipy_ext_bench_cache")
    p.add_argument("--model", help="VQVAE3D or LatentDiffusion3D file")
    p.add_argument("--cohort", help=".npy of volumes on the model grid")
    p.add_argument("--first", type=int, default=0, help="first held-out volume")
    p.add_argument("--n", type=int, default=40, help="held-out volumes")
    p.add_argument("--tissue", type=int, default=10, help="volumes segmented")
    p.add_argument("--background-threshold", type=float)
    args = p.parse_args(argv)
    import dipy_ext.nn._backend  # noqa: F401, I001 - oneDNN on before keras
    from dipy_ext.data.default import default_model_path
    from dipy_ext.metrics import reconstruction_report
    from dipy_ext.metrics.features import load_vqvae

    from bench_samplers import real_volumes

    real = real_volumes(args)
    vq = load_vqvae(args.model or default_model_path())
    if args.background_threshold is not None:
        vq.background_threshold = args.background_threshold
    # one pass of the network; the model's output steps applied to it
    network_output = vq.network.predict(real[..., None], batch_size=1, verbose=0)
    outputs = {
        "raw": network_output[..., 0],
        "as_the_model_gives_it": vq._as_volumes(network_output),
    }
    report = {"real_tissue": tissue_means(real[: args.tissue])}
    for name, recon in outputs.items():
        report[name] = reconstruction_report(real, recon)
        report[name]["tissue"] = tissue_means(recon[: args.tissue])
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
