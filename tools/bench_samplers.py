"""Compare samplers on a trained model: realism and seconds per volume.

Draws ``--n`` samples with each sampler setting from a LatentDiffusion3D
file (default: the embedded default model) and compares them with held-out
real volumes: diversity (mean pairwise MS-SSIM, real alongside), Fréchet
distance and classifier two-sample accuracy in the "stats" feature space,
and wall-clock seconds per volume (sampling the latents and decoding them,
each timed, batch 4); the classifier test on power spectra, the grid
spike at period 2, how many samples have a region outside the brain, and
the samples' mean ventricle fraction (the real volumes' printed first).

The real volumes are ``--cohort`` (an .npy of volumes on the model grid,
from ``--first`` on), or else the held-out part of the default model's
training cohort (``tools/train_default_model.py`` with its default
settings), rebuilt here and cached.

    python tools/bench_samplers.py
    python tools/bench_samplers.py --settings ddim:100:1 dpm_solver:25 ddim:50:1:2
    python tools/bench_samplers.py \
        --model scratch/default_model_v2/dipy_ext_default_ldm.npz \
        --cohort scratch/default_model_v2/cohort.npy --first 360
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
        default=["ddim:100:1", "dpm_solver:25", "dpm_solver:15", "ddim:25:0"],
        help="sampler:steps[:eta[:guidance]]",
    )
    p.add_argument("--cohort", help=".npy of real volumes on the model grid")
    p.add_argument("--first", type=int, default=0, help="first held-out volume")
    p.add_argument("--n", type=int, default=40, help="samples per setting")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--cache", default="/tmp/dipy_ext_bench_cache")
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def heldout_cohort(cache):
    """The default model's held-out volumes (its training script's cohort)."""
    from train_default_model import make_cohort, parse

    settings = parse([])
    path = Path(cache) / (
        f"default_model_heldout_{settings.shape[0]}_{settings.voxel_size}mm"
        f"_seed{settings.seed}.npy"
    )
    if not path.exists():
        first = settings.n_train
        volumes, _ = make_cohort(settings, range(first, first + settings.n_heldout))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, volumes)
    return np.load(path)


def real_volumes(args):
    """``--n`` volumes of ``--cohort`` from ``--first`` on, or else the
    default model's held-out volumes."""
    if not args.cohort:
        return heldout_cohort(args.cache)
    cohort = np.load(args.cohort, mmap_mode="r")
    return np.asarray(cohort[args.first : args.first + args.n])


def timed_synthesis(model, n, **sampling):
    """``predict`` in its two timed parts, batch 4: returns the volumes and
    the seconds per volume of sampling the latents and of decoding them."""
    t0 = time.perf_counter()
    latents = model.sample_latents(n, batch_size=4, progress=False, **sampling)
    t1 = time.perf_counter()
    volumes = model.decode(latents, batch_size=4)  # what predict does next
    t2 = time.perf_counter()
    return volumes, (t1 - t0) / n, (t2 - t1) / n


def main(argv=None):
    args = parse(argv)
    import dipy_ext.nn._backend  # noqa: F401, I001 - oneDNN on before keras
    from dipy_ext.data.default import default_model_path
    from dipy_ext.metrics import evaluate_synthesis
    from dipy_ext.metrics.covariates import measure_covariates
    from dipy_ext.nn.diffusion import LatentDiffusion3D

    model = LatentDiffusion3D.load(args.model or default_model_path())
    real = real_volumes(args)
    model.predict(1, num_inference_steps=2, progress=False)  # trace once
    ventricles = measure_covariates(real, model.vqvae.voxel_size)[:, 1].mean()
    print(f"real volumes: {len(real)}, ventricle fraction mean {ventricles:.4f}")
    rows = []
    for setting in args.settings:
        name, steps, *rest = setting.split(":")
        eta, guidance = [float(x) for x in rest] + [0.0, 1.0][len(rest) :]
        samples, sampling, decoding = timed_synthesis(
            model,
            args.n,
            sampler=name,
            num_inference_steps=int(steps),
            eta=eta,
            guidance_scale=guidance,
            seed=args.seed,
        )
        seconds = sampling + decoding
        report = evaluate_synthesis(real, samples, tissue=False, seed=0)
        rows.append(
            {
                "setting": setting,
                "seconds_per_volume": seconds,
                "sampling_seconds_per_volume": sampling,
                "decoding_seconds_per_volume": decoding,
                "diversity": report["diversity"]["synthetic"],
                "diversity_real": report["diversity"]["real"],
                "frechet": report["frechet_distance"],
                "c2st": report["classifier_two_sample_test"]["accuracy"],
                "precision": report["prdc"]["precision"],
                "recall": report["prdc"]["recall"],
                "sharpness_ratio": report["sharpness_ratio"],
                "c2st_spectrum": report["artefacts"][
                    "classifier_two_sample_test_spectrum"
                ]["accuracy"],
                "spike_2": report["artefacts"]["grid_spikes_synthetic"]["2"],
                "outside_brain": report["artefacts"]["outside_brain_synthetic"],
                "ventricle_fraction_mean": float(
                    measure_covariates(samples, model.vqvae.voxel_size)[:, 1].mean()
                ),
            }
        )
        r = rows[-1]
        print(
            f"{setting:16s} {seconds:6.2f} s/volume (sampling {sampling:.2f}, "
            f"decoding {decoding:.2f})  diversity {r['diversity']:.3f} "
            f"(real {r['diversity_real']:.3f})  Frechet {r['frechet']:.3f}  "
            f"C2ST {r['c2st']:.2f} (spectrum {r['c2st_spectrum']:.2f})  precision "
            f"{r['precision']:.2f} recall {r['recall']:.2f}  sharpness "
            f"{r['sharpness_ratio']:.3f}  spike {r['spike_2']:.2f}  outside "
            f"{r['outside_brain']}  ventricles {r['ventricle_fraction_mean']:.4f}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
