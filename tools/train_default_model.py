"""Train the default model embedded in dipy_ext (rerunnable, offline).

Data: ``--n-train`` + ``--n-heldout`` volumes from the MNI152 2009a template
(shipped with nilearn) with random affine + elastic deformations, bias
fields, gamma contrast changes and noise, on a 64^3 grid at 3 mm
(``dipy_ext.data.mni.mni_cohort``). Then a VQVAE3D (4x per axis, 16^3 x 8
latents) and a LatentDiffusion3D on its latents are trained, the held-out
evaluation of the diffusion issue is run on samples, and everything is
written to ``--out``: the model file, a JSON of settings, timings and quality
numbers (for the model card), and PNGs.

    python tools/train_default_model.py --out scratch/default_model
    cp scratch/default_model/dipy_ext_default_ldm_64.npz dipy_ext/data/default_model/

Both stages back up their state each epoch under ``--out``; rerunning the
same command after an interruption resumes where it stopped.
"""

import argparse
import json
from pathlib import Path
import platform
import time

import numpy as np


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="scratch/default_model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-heldout", type=int, default=20)
    p.add_argument("--vq-epochs", type=int, default=20)
    p.add_argument("--vq-batch", type=int, default=2)
    p.add_argument("--vq-lr", type=float, default=1e-3)
    p.add_argument("--ldm-epochs", type=int, default=80)
    p.add_argument("--ldm-batch", type=int, default=8)
    p.add_argument("--ldm-lr", type=float, default=2e-4)
    p.add_argument("--ldm-channels", default="32,64,128")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--n-samples", type=int, default=20)
    p.add_argument("--steps", type=int, default=200, help="sampling steps (evaluation)")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM eta (evaluation)")
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="re-run the evaluation of the model file in --out and update its record",
    )
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    import keras

    from dipy_ext.data.default import DEFAULT_MODEL_NAME
    from dipy_ext.data.mni import mni_cohort
    from dipy_ext.metrics import psnr, ssim
    from dipy_ext.nn.diffusion import LatentDiffusion3D
    from dipy_ext.nn.vqvae import VQVAE3D
    from dipy_ext.viz import training_curves

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "settings": vars(args),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "keras": keras.__version__,
    }

    cohort_file = out / "cohort.npz"
    if cohort_file.exists():
        saved = np.load(cohort_file)
        volumes, affine = saved["volumes"], saved["affine"]
    else:
        t0 = time.perf_counter()
        volumes, affine = mni_cohort(
            args.n_train + args.n_heldout, rng=args.seed, progress=True
        )
        np.savez(cohort_file, volumes=volumes, affine=affine)
        info["cohort_seconds"] = time.perf_counter() - t0
    train, heldout = volumes[: args.n_train], volumes[args.n_train :]
    if args.eval_only:
        info = json.loads((out / "default_model_info.json").read_text())
        info["settings"].update(steps=args.steps, eta=args.eta)
        ldm = LatentDiffusion3D.load(out / DEFAULT_MODEL_NAME)
        evaluate(ldm, train, heldout, args, info, out)
        return

    vq_file = out / "vqvae.npz"
    vq_info = out / "vqvae_info.json"  # kept so that a resumed run reports it
    if vq_file.exists():
        vq = VQVAE3D.load(vq_file)
        if vq_info.exists():
            info.update(json.loads(vq_info.read_text()))
    else:
        vq = VQVAE3D(
            input_shape=(64, 64, 64),
            channels=(16, 32, 64),
            num_res_blocks=(1, 2, 2),
            num_embeddings=512,
            embedding_dim=8,
            affine=affine,
            seed=args.seed,
            verbose=True,
        )
        t0 = time.perf_counter()
        hist = vq.fit(
            train,
            epochs=args.vq_epochs,
            batch_size=args.vq_batch,
            learning_rate=args.vq_lr,
            validation_data=heldout[:4],
            checkpoint_dir=out / "vq_backup",
            flip_augment=True,
        )
        info["vq_train_minutes"] = (time.perf_counter() - t0) / 60
        info["vq_history"] = hist.history
        training_curves(hist, out / "vq_training.png", title="default VQVAE3D")
        vq.save(vq_file)
        vq_info.write_text(
            json.dumps({k: info[k] for k in ("vq_train_minutes", "vq_history")})
        )
    rec = vq.predict(heldout, batch_size=2)
    info["vq_heldout_psnr_db"] = float(
        np.mean([psnr(a, b) for a, b in zip(heldout, rec)])
    )
    info["vq_heldout_ssim"] = float(np.mean([ssim(a, b) for a, b in zip(heldout, rec)]))
    info["vq_heldout_usage"] = vq.codebook_usage(heldout, batch_size=2)
    info["vq_params"] = vq.count_params()
    print(
        "VQ-VAE held-out:",
        info["vq_heldout_psnr_db"],
        info["vq_heldout_ssim"],
        info["vq_heldout_usage"],
        flush=True,
    )

    ldm = LatentDiffusion3D(
        vq,
        channels=[int(c) for c in args.ldm_channels.split(",")],
        attention_levels=(False, True, True),
        num_res_blocks=1,
        num_train_timesteps=1000,
        schedule="cosine",
        prediction_type="v",
        seed=args.seed,
        verbose=True,
    )
    backup_state = out / "ldm_backup" / "training_metadata.json"
    if backup_state.exists():  # a resumed run times only the epochs it trains
        info["ldm_resumed_after_epoch"] = json.loads(backup_state.read_text())["epoch"]
    t0 = time.perf_counter()
    hist = ldm.fit(
        train,
        epochs=args.ldm_epochs,
        batch_size=args.ldm_batch,
        learning_rate=args.ldm_lr,
        ema_momentum=args.ema,
        flip_augment=True,
        checkpoint_dir=out / "ldm_backup",
    )
    info["ldm_train_minutes"] = (time.perf_counter() - t0) / 60
    info["ldm_history"] = hist.history
    info["ldm_params"] = ldm.count_params()
    training_curves(hist, out / "ldm_training.png", title="default LatentDiffusion3D")
    model_file = out / DEFAULT_MODEL_NAME
    ldm.save(model_file, half_precision=True)
    info["model_file_mb"] = model_file.stat().st_size / 2**20

    evaluate(ldm, train, heldout, args, info, out)


def evaluate(ldm, train, heldout, args, info, out):
    """Sample, compare with the held-out and training volumes, write the record."""
    from dipy_ext.data.mni import MNI_NOTICE
    from dipy_ext.metrics import evaluate_synthesis, volume_distances
    from dipy_ext.viz import mosaic

    vq = ldm.vqvae
    t0 = time.perf_counter()
    samples = ldm.predict(
        args.n_samples,
        num_inference_steps=args.steps,
        eta=args.eta,
        seed=12345,
        batch_size=4,
    )
    info["sampling_seconds_per_volume"] = (time.perf_counter() - t0) / args.n_samples
    mosaic(
        list(samples[:8]) + list(heldout[:4]),
        out / "samples_vs_real.png",
        titles=[f"sample {i}" for i in range(8)] + [f"real {i}" for i in range(4)],
    )
    report = evaluate_synthesis(
        heldout, samples, training=train, max_pairs=100, seed=args.seed
    )
    noise = vq.decode(vq.random_latents(4, seed=1))
    report["decoded_noise_nn_median"] = float(
        np.median(volume_distances(noise, train).min(axis=1))
    )
    info["evaluation"] = report
    (out / "default_model_info.json").write_text(
        json.dumps(info, indent=2, default=float)
    )
    (out / "NOTICE").write_text(MNI_NOTICE + "\n")
    div = report["diversity"]
    mem = report["memorization"]
    print(
        f"diversity real {div['real']:.4f} synthetic {div['synthetic']:.4f}; "
        f"synthetic NN median {mem['synthetic_nn_median']:.4f} min "
        f"{mem['synthetic_nn_min']:.4f}; "
        f"closest training pair {mem['training_nn_min']:.4f}; "
        f"flagged {mem['flagged_fraction']:.0%}; decoded-noise NN "
        f"{report['decoded_noise_nn_median']:.4f}"
    )


if __name__ == "__main__":
    main()
