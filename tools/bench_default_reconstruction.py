"""Realism of the embedded default model's reconstructions (its VQ-VAE).

Reconstructs the default model's held-out volumes (``tools/bench_samplers.py``
rebuilds and caches them) and prints PSNR, SSIM, the sharpness ratio and the
classifier two-sample test of reconstructions vs real: the ceiling of the
realism the default model's samples can reach.

    python tools/bench_default_reconstruction.py
"""

import argparse
import json

from bench_samplers import heldout_cohort


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default="/tmp/dipy_ext_bench_cache")
    args = p.parse_args(argv)
    from dipy_ext.data.default import default_model_path
    from dipy_ext.metrics import reconstruction_report
    from dipy_ext.metrics.features import load_vqvae

    real = heldout_cohort(args.cache)
    vq = load_vqvae(default_model_path())
    report = reconstruction_report(real, vq.predict(real, batch_size=2))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
