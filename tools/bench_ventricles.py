"""Why a model's samples have the ventricles they have (issue 18 #3).

The ventricle fraction of a volume (``dipy_ext.metrics.covariates``) is
the CSF-dark share of the brain deeper than 15 mm, dark meaning below half
the brain's 95th intensity percentile. Samples can come out with smaller
ventricles for three reasons, which this script tells apart on the held-out
volumes of a cohort:

1. the autoencoder: reconstructions measure smaller than the volumes they
   reconstruct (the latent grid does not hold the ventricles);
2. the measurement: samples' CSF is less dark (lower contrast), so fewer
   voxels pass the threshold; then moving the threshold (0.4, 0.5, 0.6 of
   the 95th percentile) moves samples and real volumes differently, and
   the samples' deep-CSF intensity differs from real;
3. the diffusion stage: samples asked for a fraction (guided or not) give
   less, though reconstructions keep it and the contrast matches.

For real volumes, their reconstructions and samples (conditions drawn from
the training distribution, and the held-out volumes' own covariates
asked, at each guidance scale), it prints the mean fraction at each
threshold, the correlation of asked and measured fractions, and the mean
intensity of the deep dark voxels over the 95th percentile; and the spread
of the samples' normalised latents beside the real volumes'.

    python tools/bench_ventricles.py \\
        --model scratch/default_model_v3/dipy_ext_default_ldm.npz \\
        --cohort scratch/default_model_v3/cohort.npy --first 360
"""

import argparse

import numpy as np

THRESHOLDS = (0.4, 0.5, 0.6)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="LatentDiffusion3D file")
    p.add_argument("--cohort", required=True, help=".npy of volumes on its grid")
    p.add_argument("--first", type=int, default=360, help="first held-out volume")
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0])
    p.add_argument("--seed", type=int, default=2024)
    return p.parse_args(argv)


def ventricle_measures(volumes, voxel_size):
    """Per volume: the fraction at each threshold and the deep dark voxels'
    mean intensity over the 95th percentile (at threshold 0.5), on the
    regions the covariates measure."""
    from dipy_ext.metrics.covariates import deep_brain

    rows = []
    for volume in np.asarray(volumes, np.float32):
        mask, deep, p95 = deep_brain(volume, voxel_size)
        fractions = [(deep & (volume < t * p95)).sum() / mask.sum() for t in THRESHOLDS]
        dark = deep & (volume < 0.5 * p95)
        contrast = volume[dark].mean() / p95 if dark.any() else np.nan
        rows.append([*fractions, contrast])
    return np.asarray(rows)


def line(name, measures, asked=None):
    means = "  ".join(f"{m:.4f}" for m in measures[:, :3].mean(axis=0))
    text = f"{name:34s} fraction at {THRESHOLDS}: {means}  dark/p95 "
    text += f"{np.nanmean(measures[:, 3]):.3f}"
    if asked is not None:
        text += f"  corr asked {np.corrcoef(asked, measures[:, 1])[0, 1]:.3f}"
    print(text, flush=True)


def main(argv=None):
    args = parse(argv)
    import dipy_ext.nn._backend  # noqa: F401, I001 - oneDNN on before keras
    from dipy_ext.metrics.covariates import measure_covariates
    from dipy_ext.nn.diffusion import LatentDiffusion3D

    model = LatentDiffusion3D.load(args.model)
    vox = model.vqvae.voxel_size
    real = np.asarray(np.load(args.cohort, mmap_mode="r")[args.first :][: args.n])
    asked = measure_covariates(real, vox)
    line("real (held out)", ventricle_measures(real, vox))
    line("reconstructions", ventricle_measures(model.vqvae.predict(real), vox))
    latents = model.sample_latents(args.n, seed=args.seed, batch_size=4, progress=False)
    line("samples, drawn conditions", ventricle_measures(model.decode(latents), vox))
    # a sampler that pulls latents towards their mean pulls intensities
    # towards the average brain, and the darkest tissue (CSF) first
    print(
        f"normalised latents' std: real {model.encode(real).std():.3f}, "
        f"samples {latents.std():.3f}",
        flush=True,
    )
    for scale in args.guidance:
        samples = model.predict(
            args.n,
            conditions=asked,
            guidance_scale=scale,
            seed=args.seed,
            batch_size=4,
            progress=False,
        )
        line(
            f"samples, real's asked, guidance {scale:g}",
            ventricle_measures(samples, vox),
            asked[:, 1],
        )


if __name__ == "__main__":
    main()
