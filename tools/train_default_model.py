"""Train the default model embedded in dipy_ext (rerunnable, offline).

Stages, each resumable (rerun the same command after an interruption):

1. **cohort**: ``--n-train`` + ``--n-heldout`` volumes from the MNI152 2009a
   template shipped with nilearn (``dipy_ext.data.mni.mni_cohort``: random
   pose, head size, elastic deformation, cortical thinning, ventricle size,
   asymmetry, bias field, contrast, noise) on a 128^3 grid at 1.5 mm in MNI
   space; the covariates (brain volume, ventricle fraction) are measured
   from each volume (``dipy_ext.metrics.covariates``). The held-out
   volumes are never trained on.
2. **vqvae**: a VQVAE3D at 8x per axis (16^3 x 8 latents) trained on 64^3
   patches with the gradient-difference and adversarial losses.
3. **ldm**: a conditional LatentDiffusion3D on its latents, with condition
   dropout for classifier-free guidance.
4. **eval**: samples vs the held-out volumes (``evaluate_synthesis``),
   reconstruction quality, and the conditioning check (requested vs measured
   covariates over a grid of requests); written to
   ``default_model_info.json`` beside the model file.

    python tools/train_default_model.py --out scratch/default_model_v2
    cp scratch/default_model_v2/dipy_ext_default_ldm.npz dipy_ext/data/default_model/
    cp scratch/default_model_v2/default_model_info.json doc/

``--stop-after STAGE`` ends after a stage; ``--eval-only`` re-runs stage 4.
Every stage prints its wall-clock time, which the record keeps.
"""

import argparse
import json
from pathlib import Path
import platform
import time

import numpy as np

STAGES = ("cohort", "vqvae", "ldm", "eval")
# decoded volumes are cut where the covariates measure the brain
# (dipy_ext.metrics.covariates), as skull stripping cut the training volumes
BACKGROUND_THRESHOLD = 0.05
# the variety of the cohort (dipy_ext.data.mni.mni_cohort) beside its grid
COHORT_AUGMENTATION = {
    "rotation_deg": 5.0,
    "scale": 0.03,
    "head_size": (0.9, 0.035),
    "anatomy": True,
}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="scratch/default_model_v2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=360)
    p.add_argument("--n-heldout", type=int, default=40)
    p.add_argument("--shape", type=int, nargs=3, default=(128, 128, 128))
    p.add_argument("--voxel-size", type=float, default=1.5)
    p.add_argument("--workers", type=int, default=2, help="cohort processes")
    p.add_argument("--vq-epochs", type=int, default=20)
    p.add_argument("--vq-batch", type=int, default=2)
    p.add_argument("--vq-lr", type=float, default=5e-4)
    p.add_argument("--vq-patch", type=int, default=64)
    p.add_argument("--vq-codes", type=int, default=1024)
    p.add_argument(
        "--vq-quantizer",
        type=json.loads,
        default={"kind": "vq"},
        help='quantizer spec (JSON), e.g. {"kind": "fsq", "levels": [8,8,8,5,5,5]}',
    )
    p.add_argument("--vq-channels", default="32,64,128")
    p.add_argument(
        "--vq-output-stage", default="subpixel", choices=("subpixel", "interpolate")
    )
    p.add_argument("--vq-adversarial", type=float, default=0.02)
    p.add_argument("--vq-feature-matching", type=float, default=0.0)
    p.add_argument("--vq-disc-lr", type=float, default=1e-4)
    p.add_argument("--ldm-epochs", type=int, default=45)
    p.add_argument("--ldm-batch", type=int, default=8)
    p.add_argument("--ldm-lr", type=float, default=2e-4)
    p.add_argument("--ldm-channels", default="32,64,128")
    p.add_argument(
        "--ldm-attention",
        default="0,1,1",
        help="attention per UNet level (1 = on); for 32^3 latents 0,0,1,1 "
        "with --ldm-channels 16,32,64,128 (tools/bench_unet_latents.py)",
    )
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--n-samples", type=int, default=40)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=100, help="sampling steps")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM eta")
    p.add_argument("--guidance", type=float, default=1.0, help="guidance scale")
    p.add_argument("--stop-after", choices=STAGES, default="eval")
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="re-run the evaluation of the model file in --out and update its record",
    )
    return p.parse_args(argv)


def step_log(every=20):
    """A callback printing the step, seconds per step and loss every few
    steps (Keras prints one line per epoch when output goes to a file)."""
    import keras

    class StepLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.start = epoch, time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % every == 0:
                seconds = (time.perf_counter() - self.start) / (batch + 1)
                loss = (logs or {}).get("loss", float("nan"))
                print(
                    f"epoch {self.epoch + 1} step {batch + 1}: {seconds:.2f} s/step, "
                    f"loss {float(loss):.4f}",
                    flush=True,
                )

    return StepLog()


class Record:
    """The JSON record of a run, updated and rewritten stage by stage."""

    def __init__(self, path):
        self.path = Path(path)
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

    def update(self, **items):
        self.data.update(items)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=float))
        tmp.replace(self.path)


def make_cohort(args, indices=None):
    """The cohort of these settings, or only its members ``indices``."""
    from dipy_ext.data.mni import mni_cohort

    return mni_cohort(
        args.n_train + args.n_heldout,
        shape=tuple(args.shape),
        voxel_size=args.voxel_size,
        rng=args.seed,
        indices=indices,
        workers=args.workers,
        progress=True,
        **COHORT_AUGMENTATION,
    )


def build_cohort(args, out, record):
    """Stage 1: the cohort (memory-mapped .npy) and its measured covariates."""
    from dipy_ext.metrics.covariates import measure_covariates

    volumes_file, grid_file = out / "cohort.npy", out / "cohort_grid.npy"
    covariates_file = out / "cohort_covariates.npy"
    if not covariates_file.exists():
        t0 = time.perf_counter()
        volumes, grid = make_cohort(args)
        covariates = measure_covariates(volumes, args.voxel_size)
        np.save(volumes_file, volumes)
        np.save(grid_file, grid)
        np.save(covariates_file, covariates)  # written last: the stage is done
        record.update(cohort_minutes=(time.perf_counter() - t0) / 60)
        del volumes
    volumes = np.load(volumes_file, mmap_mode="r")
    return volumes, np.load(grid_file), np.load(covariates_file)


def train_vqvae(args, out, record, train, heldout, grid):
    """Stage 2: the 8x autoencoder, trained on patches."""
    from dipy_ext.metrics.sharpness import reconstruction_report
    from dipy_ext.nn.vqvae import VQVAE3D
    from dipy_ext.viz import training_curves

    vq_file = out / "vqvae.npz"
    if vq_file.exists():
        vq = VQVAE3D.load(vq_file)
        if vq.intensity_map is None:
            # files trained before these options existed: their output
            # calibrated and cut as skull stripping cuts (the encoder and
            # the latents are unchanged)
            vq.background_threshold = BACKGROUND_THRESHOLD
            calibrate(vq, train, record)
            vq.save(vq_file)
        return vq
    vq = VQVAE3D(
        input_shape=tuple(args.shape),
        channels=[int(c) for c in args.vq_channels.split(",")],
        num_res_blocks=1,
        quantizer=args.vq_quantizer,
        output_stage=args.vq_output_stage,
        num_embeddings=args.vq_codes,
        embedding_dim=8,
        affine=grid,
        space="MNI",
        background_threshold=BACKGROUND_THRESHOLD,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    hist = vq.fit(
        train,
        epochs=args.vq_epochs,
        batch_size=args.vq_batch,
        learning_rate=args.vq_lr,
        validation_data=np.asarray(heldout[:2]),
        checkpoint_dir=out / "vq_backup",
        flip_augment=True,
        patch_shape=(args.vq_patch,) * 3,
        adversarial_weight=args.vq_adversarial,
        feature_matching=args.vq_feature_matching,
        discriminator_learning_rate=args.vq_disc_lr,
        callbacks=[step_log(), keras_csv(out / "vq_history.csv")],
    )
    training_curves(hist, out / "vq_training.png", title="default VQVAE3D")
    calibrate(vq, train, record)
    vq.save(vq_file)
    real = np.asarray(heldout)  # all 40: the autoencoder issue's measure
    report = reconstruction_report(real, vq.predict(real), seed=args.seed)
    record.update(
        vq_train_minutes=(time.perf_counter() - t0) / 60,
        vq_history=hist.history,
        vq_params=vq.count_params(),
        vq_heldout=report,
    )
    print("VQ-VAE held-out:", report, flush=True)
    return vq


def keras_csv(path):
    """Per-epoch metrics appended to a CSV (kept across resumed runs, so the
    record holds every epoch, the discriminator's accuracy included)."""
    import keras

    return keras.callbacks.CSVLogger(str(path), append=True)


def calibrate(vq, train, record, n=20):
    """The decoder's intensities mapped onto the training volumes'."""
    t0 = time.perf_counter()
    vq.calibrate_intensity(np.asarray(train[:n]))
    record.update(
        vq_intensity_calibration={
            "volumes": n,
            "minutes": (time.perf_counter() - t0) / 60,
        }
    )


def recommended_sampling(args):
    return {
        "sampler": args.sampler,
        "num_inference_steps": args.steps,
        "eta": args.eta,
        "guidance_scale": args.guidance,
    }


def train_ldm(args, out, record, vq, train, covariates, heldout, heldout_cov):
    """Stage 3: the conditional latent diffusion model (with the held-out
    volumes' loss per epoch, to see when it stops falling)."""
    from dipy_ext.data.default import DEFAULT_MODEL_NAME
    from dipy_ext.metrics.covariates import COVARIATES
    from dipy_ext.nn.diffusion import LatentDiffusion3D
    from dipy_ext.viz import training_curves

    model_file = out / DEFAULT_MODEL_NAME
    if model_file.exists():
        ldm = LatentDiffusion3D.load(model_file)
        sampling = {**ldm.sampling, **recommended_sampling(args)}
        if ldm.vqvae.get_config() != vq.get_config() or ldm.sampling != sampling:
            # output settings chosen after training (the autoencoder's
            # calibration and background cut, the recommended sampling);
            # the latents and the networks are the same
            ldm.vqvae.intensity_map = vq.intensity_map
            ldm.vqvae.background_threshold = vq.background_threshold
            ldm.sampling = sampling
            ldm.save(model_file, half_precision=True)
        return ldm
    ldm = LatentDiffusion3D(
        vq,
        channels=[int(c) for c in args.ldm_channels.split(",")],
        attention_levels=[a == "1" for a in args.ldm_attention.split(",")],
        num_res_blocks=1,
        condition_dim=len(COVARIATES),
        condition_names=list(COVARIATES),
        condition_dropout=0.15,
        seed=args.seed,
        sampling=recommended_sampling(args),
    )
    t0 = time.perf_counter()
    hist = ldm.fit(
        train,
        conditions=covariates,
        epochs=args.ldm_epochs,
        batch_size=args.ldm_batch,
        learning_rate=args.ldm_lr,
        ema_momentum=args.ema,
        flip_augment=True,
        validation_data=np.asarray(heldout),
        validation_conditions=heldout_cov,
        checkpoint_dir=out / "ldm_backup",
        callbacks=[step_log(), keras_csv(out / "ldm_history.csv")],
    )
    training_curves(hist, out / "ldm_training.png", title="default LatentDiffusion3D")
    ldm.save(model_file, half_precision=True)
    record.update(
        ldm_train_minutes=(time.perf_counter() - t0) / 60,
        ldm_history=hist.history,
        ldm_params=ldm.count_params(),
        model_file_mb=model_file.stat().st_size / 2**20,
    )
    return ldm


def evaluate(args, out, record, ldm, train, heldout, covariates, heldout_cov):
    """Stage 4: realism, reconstruction and conditioning, into the record,
    with the settings of the command line (``--sampler``, ``--steps``,
    ``--eta``, ``--guidance``)."""
    from dipy_ext.data.mni import MNI_NOTICE
    from dipy_ext.metrics import evaluate_synthesis
    from dipy_ext.metrics.covariates import measure_covariates
    from dipy_ext.metrics.sharpness import reconstruction_report

    heldout = np.asarray(heldout)
    sampling = recommended_sampling(args)
    t0 = time.perf_counter()
    samples = ldm.predict(args.n_samples, seed=12345, batch_size=4, **sampling)
    seconds = (time.perf_counter() - t0) / args.n_samples
    reconstructions = ldm.vqvae.predict(heldout[:20])
    picture(out / "samples_vs_real.png", heldout, reconstructions, samples)
    report = evaluate_synthesis(heldout, samples, training=train, seed=args.seed)
    report["real_vs_real"] = real_vs_real(heldout, args.seed)
    report["covariates_of_unconditional_samples"] = measure_covariates(
        samples, args.voxel_size
    ).tolist()
    report["conditioning"] = conditioning_check(ldm, covariates, args, sampling)
    report["reconstruction"] = reconstruction_report(
        heldout[:20], reconstructions, seed=args.seed
    )
    # whether the autoencoder keeps the covariates the samples should follow
    report["reconstruction"]["covariates"] = {
        "real": heldout_cov[:20].tolist(),
        "reconstructed": measure_covariates(reconstructions, args.voxel_size).tolist(),
    }
    summary = summary_table(report, covariates, seconds)
    (out / "NOTICE").write_text(MNI_NOTICE + "\n")
    record.update(
        sampling_seconds_per_volume=seconds,
        sampling=sampling,
        evaluation=report,
        summary=summary,
        evaluate_minutes=(time.perf_counter() - t0) / 60,
    )
    for row in summary:
        print(
            f"{row['measure']:48s} {row['value']:>22s}  wanted {row['wanted']:>14s}"
            f"  {'holds' if row['holds'] else 'MISSES'}",
            flush=True,
        )


def picture(path, real, reconstructions, samples, n=4):
    """Mid-slices in three views: real volumes, their reconstructions, samples."""
    from dipy_ext.viz import mosaic

    mosaic(
        [*real[:n], *reconstructions[:n], *samples[: 2 * n]],
        path,
        titles=[f"real {i}" for i in range(n)]
        + [f"reconstr. {i}" for i in range(n)]
        + [f"sample {i}" for i in range(2 * n)],
    )


def real_vs_real(heldout, seed):
    """The classifier tests between two halves of the held-out volumes:
    what indistinguishable scores with this many volumes."""
    from dipy_ext.metrics import classifier_two_sample_test
    from dipy_ext.metrics.features import get_feature_extractor

    half = len(heldout) // 2
    out = {}
    for name in ("stats", "spectrum"):
        features = get_feature_extractor(name)(heldout)
        out[name] = classifier_two_sample_test(
            features[:half], features[half:], seed=seed
        )["accuracy"]
    return out


def summary_table(report, covariates, seconds):
    """Issue 18's measures: the value, the wanted bound, whether it holds."""
    conditioning = report["conditioning"]
    unguided = np.asarray(report["covariates_of_unconditional_samples"])
    trained_mean = covariates.mean(axis=0)
    prdc = report["prdc"]
    artefacts = report["artefacts"]

    def row(measure, value, wanted, holds):
        return {"measure": measure, "value": value, "wanted": wanted, "holds": holds}

    c2st = report["classifier_two_sample_test"]["accuracy"]
    c2st_spectrum = artefacts["classifier_two_sample_test_spectrum"]["accuracy"]
    rows = [
        row("C2ST, stats features", f"{c2st:.3f}", "<= 0.80", c2st <= 0.80),
        row(
            "C2ST, spectrum features",
            f"{c2st_spectrum:.3f}",
            "<= 0.75",
            c2st_spectrum <= 0.75,
        ),
        row(
            "precision / recall (k = 5)",
            f"{prdc['precision']:.2f} / {prdc['recall']:.2f}",
            ">= 0.80 / 0.50",
            prdc["precision"] >= 0.8 and prdc["recall"] >= 0.5,
        ),
    ]
    for tissue in ("csf", "gm", "wm"):
        t = report["tissue"][tissue]
        ratio = t["synthetic_std"] / t["real_std"]
        rows.append(
            row(
                f"tissue fraction std {tissue}, samples / real",
                f"{ratio:.2f}",
                "0.70-1.30",
                0.7 <= ratio <= 1.3,
            )
        )
    for k, name, wanted in ((1, "ventricle_fraction", 0.85), (0, "brain_volume", 0.9)):
        corr = conditioning[name]["correlation"]
        rows.append(
            row(
                f"{name}: asked vs measured correlation",
                f"{corr:.3f}",
                f">= {wanted}",
                corr >= wanted,
            )
        )
        ratio = unguided[:, k].mean() / trained_mean[k]
        rows.append(
            row(
                f"{name}: unconditional mean / training",
                f"{ratio:.3f}",
                "0.90-1.10",
                0.9 <= ratio <= 1.1,
            )
        )
    outside = artefacts["outside_brain_synthetic"]
    spike = artefacts["grid_spikes_synthetic"]["2"]
    rows += [
        row(
            "samples with a region outside the brain",
            f"{outside} of {report['n_synthetic']}",
            "0",
            outside == 0,
        ),
        row("spectral spike at period 2", f"{spike:.3f}", "<= 1.15", spike <= 1.15),
        row("seconds per volume (batch 4)", f"{seconds:.2f}", "<= 5", seconds <= 5),
    ]
    return rows


def conditioning_check(ldm, covariates, args, sampling, per_axis=4, per_request=2):
    """Requested vs measured covariates over a grid of requests."""
    from dipy_ext.metrics.covariates import COVARIATES, measure_covariates

    low, high = np.percentile(covariates, [10, 90], axis=0)
    axes = [np.linspace(lo, hi, per_axis) for lo, hi in zip(low, high)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    requests = np.repeat(grid, per_request, axis=0).astype(np.float32)
    samples = ldm.predict(
        len(requests), conditions=requests, seed=777, batch_size=4, **sampling
    )
    measured = measure_covariates(samples, args.voxel_size)
    out = {"requests": requests.tolist(), "measured": measured.tolist()}
    for k, name in enumerate(COVARIATES):
        asked, got = requests[:, k], measured[:, k]
        out[name] = {
            "correlation": float(np.corrcoef(asked, got)[0, 1]),
            "mean_absolute_error": float(np.abs(asked - got).mean()),
            "training_range": [
                float(covariates[:, k].min()),
                float(covariates[:, k].max()),
            ],
        }
    return out


def main(argv=None):
    args = parse(argv)
    # dipy_ext.nn before keras: it turns on TensorFlow's oneDNN kernels
    # (5x faster 3D convolutions on CPUs without AVX-512), which only takes
    # effect if set before TensorFlow is first imported
    import dipy_ext.nn._backend  # noqa: F401, I001 - must come before keras
    import keras

    from dipy_ext.data.default import DEFAULT_MODEL_NAME
    from dipy_ext.nn.diffusion import LatentDiffusion3D

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = Record(out / "default_model_info.json")
    record.update(
        settings=vars(args),
        machine=f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        keras=keras.__version__,
    )
    t0 = time.perf_counter()
    volumes, grid, covariates = build_cohort(args, out, record)
    print(f"stage cohort: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    if args.stop_after == "cohort":
        return
    train, heldout = volumes[: args.n_train], volumes[args.n_train :]
    train_cov, heldout_cov = covariates[: args.n_train], covariates[args.n_train :]
    if args.eval_only:
        ldm = LatentDiffusion3D.load(out / DEFAULT_MODEL_NAME)
        evaluate(args, out, record, ldm, train, heldout, train_cov, heldout_cov)
        return
    for stage in STAGES[1:]:
        t0 = time.perf_counter()
        if stage == "vqvae":
            vq = train_vqvae(args, out, record, train, heldout, grid)
        elif stage == "ldm":
            ldm = train_ldm(
                args,
                out,
                record,
                vq,
                train,
                train_cov,
                heldout,
                heldout_cov,
            )
        elif stage == "eval":
            evaluate(args, out, record, ldm, train, heldout, train_cov, heldout_cov)
        print(f"stage {stage}: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
        if stage == args.stop_after:
            break


if __name__ == "__main__":
    main()
