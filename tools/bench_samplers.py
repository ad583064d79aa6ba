"""Compare samplers on a trained model: realism and seconds per volume.

Draws ``--n`` samples with each sampler setting from a LatentDiffusion3D
file (default: the embedded default model) and compares them with held-out
real volumes: diversity (mean pairwise MS-SSIM, real alongside), Fréchet
distance and classifier two-sample accuracy in the "stats" feature space,
and wall-clock seconds per volume (sampling and decoding, batch 4).

For the default model the real volumes are the held-out part of its
training cohort (``tools/train_default_model.py``: MNI cohort seed 0,
volumes 200-219), rebuilt here and cached.

    python tools/bench_samplers.py
    python tools/bench_samplers.py --settings ddim:200:1 dpm_solver:25 dpm_solver:15
"""

import argparse
import json
from pathlib import Path
import time

import numpy as np


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", help="LatentDiffusion3D file (default: the embedded model)"
    )
    p.add_argument(
        "--settings",
        nargs="+",
        default=["ddim:200:1", "dpm_solver:25", "dpm_solver:15", "ddim:25:0"],
        help="sampler:steps[:eta]",
    )
    p.add_argument("--n", type=int, default=20, help="samples per setting")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--cache", default="/tmp/dipy_ext_bench_cache")
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def heldout_cohort(cache):
    """The default model's held-out volumes (its training script's cohort)."""
    from dipy_ext.data.mni import mni_cohort

    path = Path(cache) / "default_model_cohort_220_seed0.npy"
    if not path.exists():
        volumes, _ = mni_cohort(220, rng=0, progress=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, volumes)
    return np.load(path)[200:]


def main(argv=None):
    args = parse(argv)
    from dipy_ext.data.default import default_model_path
    from dipy_ext.metrics import evaluate_synthesis
    from dipy_ext.nn.diffusion import LatentDiffusion3D

    model = LatentDiffusion3D.load(args.model or default_model_path())
    real = heldout_cohort(args.cache)
    model.predict(1, num_inference_steps=2, progress=False)  # trace once
    rows = []
    for setting in args.settings:
        name, steps, *eta = setting.split(":")
        eta = float(eta[0]) if eta else 0.0
        t0 = time.perf_counter()
        samples = model.predict(
            args.n,
            sampler=name,
            num_inference_steps=int(steps),
            eta=eta,
            seed=args.seed,
            batch_size=4,
            progress=False,
        )
        seconds = (time.perf_counter() - t0) / args.n
        report = evaluate_synthesis(real, samples, tissue=False, seed=0)
        rows.append(
            {
                "setting": setting,
                "seconds_per_volume": seconds,
                "diversity": report["diversity"]["synthetic"],
                "diversity_real": report["diversity"]["real"],
                "frechet": report["frechet_distance"],
                "c2st": report["classifier_two_sample_test"]["accuracy"],
                "precision": report["prdc"]["precision"],
                "recall": report["prdc"]["recall"],
                "sharpness_ratio": report["sharpness_ratio"],
            }
        )
        r = rows[-1]
        print(
            f"{setting:16s} {seconds:6.2f} s/volume  diversity {r['diversity']:.3f} "
            f"(real {r['diversity_real']:.3f})  Frechet {r['frechet']:.3f}  "
            f"C2ST {r['c2st']:.2f}  precision {r['precision']:.2f} recall "
            f"{r['recall']:.2f}  sharpness {r['sharpness_ratio']:.3f}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
