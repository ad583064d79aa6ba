"""Benchmark LatentDiffusion3D: sampling speed, training speed, and the proof
that its samples are brains (phantoms of two families), not noise.

Speed (untrained weights; speed does not depend on them), per volume,
batch 1, on the model grids 64^3 (VQ-VAE 4x -> 16^3 latents) and 128^3
(VQ-VAE 8x -> 16^3 latents): DDIM 25 / 50 / 100 and DDPM 1000 steps,
float32 and bfloat16; plus UNet training steps per second.

Quality (``--quality``): phantoms of two families (atrophy 0 and 1, mixed
``--mix`` : 1 - mix), a VQ-VAE and a diffusion model trained on them, then
samples from a held-out seed compared with the training set:

(a) each sample's nearest training volume is closer than decoded noise's;
(b) both families appear, in proportions near the training data's
    (families told apart by ventricle size);
(c) pairwise diversity (mean MS-SSIM) of samples near the real pairs' value,
    not near 1 (collapse) nor near decoded noise's;
(d) no sample is a near-copy: every sample's nearest-neighbour distance is
    above ``--copy-factor`` times the median nearest-neighbour distance
    between training volumes.

    python tools/bench_diffusion.py --speed --quality
"""

import argparse
import json
import time

import numpy as np
from step_timing import step_timer


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--speed", action="store_true")
    p.add_argument("--quality", action="store_true")
    p.add_argument("--shape", type=int, default=32, help="quality: grid side")
    p.add_argument("--n-train", type=int, default=64)
    p.add_argument(
        "--mix", type=float, default=0.5, help="fraction of atrophy-0 family"
    )
    p.add_argument("--vq-epochs", type=int, default=60)
    p.add_argument("--ldm-epochs", type=int, default=400)
    p.add_argument("--ldm-channels", default="32,64,64")
    p.add_argument("--n-samples", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--copy-factor", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed-unet-channels", default="32,64,128")
    p.add_argument("--json", help="write the numbers here")
    return p.parse_args(argv)


def speed(args):
    """Seconds per volume for each grid, sampler, step count and precision."""
    import keras

    from dipy_ext.nn.diffusion import LatentDiffusion3D, diffusion_loss
    from dipy_ext.nn.vqvae import VQVAE3D

    unet_ch = [int(c) for c in args.speed_unet_channels.split(",")]
    rows = []
    grids = {64: ((16, 32, 64), (1, 2, 2)), 128: ((16, 32, 64, 64), (1, 1, 2, 2))}
    for side, (vq_ch, vq_rb) in grids.items():
        for bf16 in (False, True):
            vq = VQVAE3D(
                input_shape=(side,) * 3,
                channels=vq_ch,
                num_res_blocks=vq_rb,
                quantizer="vq",
                output_stage="subpixel",
                num_embeddings=512,
                embedding_dim=8,
                mixed_precision=bf16,
                seed=0,
            )
            ldm = LatentDiffusion3D(
                vq,
                channels=unet_ch,
                attention_levels=(False, True, True),
                num_res_blocks=2,
                mixed_precision=bf16,
                seed=0,
            )
            # untrained: identity latent normalisation (speed does not care)
            ldm.scale_factor = 1.0
            ldm.latent_mean = np.zeros((*vq.latent_shape, vq.embedding_dim), np.float32)
            ldm.predict(1, num_inference_steps=2, progress=False)  # trace
            for sampler, steps in (
                ("ddim", 25),
                ("ddim", 50),
                ("ddim", 100),
                ("ddpm", 1000),
            ):
                t0 = time.perf_counter()
                ldm.predict(
                    1,
                    sampler=sampler,
                    num_inference_steps=steps,
                    seed=0,
                    progress=False,
                )
                rows.append(
                    {
                        "grid": side,
                        "latent": list(vq.latent_shape),
                        "precision": "bf16" if bf16 else "fp32",
                        "sampler": sampler,
                        "steps": steps,
                        "seconds": time.perf_counter() - t0,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
            # training throughput of the denoiser on random latents
            lat = (
                np.random.default_rng(0)
                .standard_normal((64, *vq.latent_shape, vq.embedding_dim))
                .astype(np.float32)
            )
            timer = step_timer()
            ldm.trainer.compile(
                optimizer=keras.optimizers.Adam(1e-4), loss=diffusion_loss
            )
            ldm.trainer.fit(
                lat, lat, batch_size=8, epochs=1, verbose=0, callbacks=[timer]
            )
            rows.append(
                {
                    "grid": side,
                    "precision": "bf16" if bf16 else "fp32",
                    "train_steps_per_s_batch8": 1 / float(np.median(timer.times[2:])),
                    "unet_params": ldm.count_params(),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def quality(args):
    from dipy_ext.data import phantom_cohort, ventricle_fraction
    from dipy_ext.metrics import diversity, memorization, psnr, volume_distances
    from dipy_ext.nn.diffusion import LatentDiffusion3D
    from dipy_ext.nn.vqvae import VQVAE3D

    shape = (args.shape,) * 3
    rng = np.random.default_rng(args.seed)
    n0 = int(round(args.mix * args.n_train))
    atrophy = np.r_[np.zeros(n0), np.ones(args.n_train - n0)]
    rng.shuffle(atrophy)
    train = phantom_cohort(args.n_train, shape, rng=args.seed, atrophy=atrophy)
    out = {"grid": list(shape), "n_train": args.n_train, "mix": args.mix}

    t0 = time.perf_counter()
    vq = VQVAE3D(
        input_shape=shape,
        channels=(16, 32, 64),
        num_res_blocks=(1, 2, 2),
        quantizer="vq",
        output_stage="subpixel",
        num_embeddings=256,
        embedding_dim=8,
        seed=args.seed,
    )
    vq.fit(
        train,
        epochs=args.vq_epochs,
        batch_size=4,
        learning_rate=1e-3,
        flip_augment=True,
    )
    out["vq_minutes"] = (time.perf_counter() - t0) / 60
    rec = vq.predict(train[:8], batch_size=4)
    out["vq_train_psnr_db"] = float(
        np.mean([psnr(a, b) for a, b in zip(train[:8], rec)])
    )
    out["vq_recon_rms"] = float(np.sqrt(np.mean((rec - train[:8]) ** 2)))

    t0 = time.perf_counter()
    ldm = LatentDiffusion3D(
        vq,
        channels=[int(c) for c in args.ldm_channels.split(",")],
        attention_levels=(False, True, True),
        num_res_blocks=2,
        seed=args.seed,
    )
    hist = ldm.fit(
        train,
        epochs=args.ldm_epochs,
        batch_size=16,
        learning_rate=5e-4,
        ema_momentum=0.995,
        flip_augment=True,
    )
    out["ldm_minutes"] = (time.perf_counter() - t0) / 60
    out["ldm_final_loss"] = hist.history["loss"][-1]

    held_out_seed = 10_000 + args.seed
    samples = ldm.predict(
        args.n_samples,
        num_inference_steps=args.steps,
        seed=held_out_seed,
        batch_size=8,
        progress=False,
    )
    noise = vq.decode(vq.random_latents(8, seed=held_out_seed))

    # (a) nearest training volume: samples vs decoded noise
    nn_samples = volume_distances(samples, train).min(axis=1)
    nn_noise = volume_distances(noise, train).min(axis=1)
    out["a_sample_nn_median"] = float(np.median(nn_samples))
    out["a_sample_nn_max"] = float(nn_samples.max())
    out["a_noise_nn_median"] = float(np.median(nn_noise))
    # (b) families, told apart by ventricle size
    vf_train = ventricle_fraction(train)
    threshold = (vf_train[atrophy == 0].mean() + vf_train[atrophy == 1].mean()) / 2
    frac_train = float((vf_train > threshold).mean())
    frac_samples = float((ventricle_fraction(samples) > threshold).mean())
    out["b_family1_fraction_train"] = frac_train
    out["b_family1_fraction_samples"] = frac_samples
    # (c) diversity
    out["c_diversity_real"] = diversity(train[: args.n_samples], max_pairs=200, seed=0)[
        0
    ]
    out["c_diversity_samples"] = diversity(samples, max_pairs=200, seed=0)[0]
    out["c_diversity_noise"] = diversity(noise, max_pairs=28, seed=0)[0]
    # (d) memorisation
    mem = memorization(samples, train, factor=1.0)
    out["d_training_nn_median"] = mem["training_nn_median"]
    out["d_training_nn_min"] = mem["training_nn_min"]
    out["d_sample_nn_min"] = mem["synthetic_nn_min"]
    out["d_copy_threshold"] = args.copy_factor * mem["training_nn_median"]
    out["checks"] = {
        "a_samples_closer_than_noise": out["a_sample_nn_max"]
        < out["a_noise_nn_median"],
        "b_both_families": 0 < frac_samples < 1
        and abs(frac_samples - frac_train) < 0.2,
        "c_diversity_near_real": abs(
            out["c_diversity_samples"] - out["c_diversity_real"]
        )
        < 0.05,
        "d_no_near_copy": out["d_sample_nn_min"] > out["d_copy_threshold"],
    }
    from dipy_ext.viz import mosaic

    mosaic(
        list(samples[:8]) + list(train[:4]),
        "bench_diffusion_samples.png",
        titles=[f"sample {i}" for i in range(8)] + [f"train {i}" for i in range(4)],
    )
    return out


def main(argv=None):
    args = parse(argv)
    results = {}
    if args.speed:
        results["speed"] = speed(args)
    if args.quality:
        results["quality"] = quality(args)
        print(json.dumps(results["quality"], indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=float)


if __name__ == "__main__":
    main()
