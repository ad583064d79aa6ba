"""Benchmark VQVAE3D on phantoms: speed (float32 vs bfloat16), memory, quality.

Prints, for each precision: training throughput (voxels/s over steady-state
steps), encode and decode throughput (volumes/s), peak resident memory of a
process doing only that; then the held-out reconstruction quality (PSNR,
SSIM, codebook usage) after a fixed number of training steps.

    python tools/bench_vqvae.py                   # defaults: 64^3, 4x
    python tools/bench_vqvae.py --steps 200 --shape 32   # quick look

Each speed measurement runs in a child process so its peak memory is its own.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, default=64, help="cube side of the grid")
    p.add_argument("--channels", default="16,32,64")
    p.add_argument("--res-blocks", default="1,2,2")
    p.add_argument("--codes", type=int, default=512)
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--train", type=int, default=64, help="training phantoms")
    p.add_argument("--val", type=int, default=8, help="held-out phantoms")
    p.add_argument("--steps", type=int, default=1200, help="training steps")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--speed-steps", type=int, default=8)
    p.add_argument("--quality-precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", help="write the trained model here")
    return p.parse_args(argv)


def build(args, mixed_precision):
    from dipy_ext.nn.vqvae import VQVAE3D

    return VQVAE3D(
        input_shape=(args.shape,) * 3,
        channels=[int(c) for c in args.channels.split(",")],
        num_res_blocks=[int(c) for c in args.res_blocks.split(",")],
        num_embeddings=args.codes,
        embedding_dim=args.dim,
        mixed_precision=mixed_precision,
        seed=args.seed,
    )


def step_timer():
    import keras

    class StepTimer(keras.callbacks.Callback):
        times = []

        def on_train_batch_begin(self, batch, logs=None):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.t0)

    return StepTimer()


def speed_phase(args, precision):
    """Child process: steady-state training and inference speed."""
    from dipy_ext.data import phantom_cohort

    vq = build(args, precision == "bf16")
    n = args.batch * (args.speed_steps + 2)
    data = phantom_cohort(n, (args.shape,) * 3, rng=args.seed)
    timer = step_timer()
    vq.fit(data, epochs=1, batch_size=args.batch, callbacks=[timer])
    step = float(np.median(timer.times[2:]))
    vq.encode(data[:2], batch_size=2)  # trace
    t0 = time.perf_counter()
    latents = vq.encode(data[: 4 * args.batch], batch_size=args.batch)
    enc = 4 * args.batch / (time.perf_counter() - t0)
    vq.decode(latents[:2], batch_size=2)
    t0 = time.perf_counter()
    vq.decode(latents, batch_size=args.batch)
    dec = len(latents) / (time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "precision": precision,
                "params": vq.count_params(),
                "train_step_s": step,
                "train_voxels_per_s": args.batch * args.shape**3 / step,
                "encode_volumes_per_s": enc,
                "decode_volumes_per_s": dec,
                "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                / 2**20,
            }
        )
    )


def quality(args):
    from dipy_ext.data import phantom_cohort
    from dipy_ext.metrics import psnr, ssim

    shape = (args.shape,) * 3
    train = phantom_cohort(
        args.train, shape, rng=args.seed, atrophy=np.linspace(0, 1, args.train)
    )
    val = phantom_cohort(
        args.val, shape, rng=args.seed + 1000, atrophy=np.linspace(0, 1, args.val)
    )
    vq = build(args, args.quality_precision == "bf16")
    steps_per_epoch = int(np.ceil(args.train / args.batch))
    epochs = max(1, round(args.steps / steps_per_epoch))
    t0 = time.perf_counter()
    history = vq.fit(
        train,
        epochs=epochs,
        batch_size=args.batch,
        learning_rate=args.lr,
        flip_augment=True,
    )
    train_s = time.perf_counter() - t0
    recon = vq.predict(val, batch_size=args.batch)
    p = [psnr(v, r) for v, r in zip(val, recon)]
    s = [ssim(v, r) for v, r in zip(val, recon)]
    usage = vq.codebook_usage(val, batch_size=args.batch)
    if args.save:
        vq.save(args.save)
    return {
        "precision": args.quality_precision,
        "steps": epochs * steps_per_epoch,
        "train_minutes": train_s / 60,
        "final_train_l1": history.history["l1"][-1],
        "heldout_psnr_db": float(np.mean(p)),
        "heldout_psnr_min_db": float(np.min(p)),
        "heldout_ssim": float(np.mean(s)),
        "heldout_ssim_min": float(np.min(s)),
        **{f"heldout_{k}": v for k, v in usage.items()},
    }


def main(argv=None):
    args = parse(argv)
    if args.phase:
        return speed_phase(args, args.phase)
    print(
        f"VQVAE3D benchmark: {args.shape}^3 phantoms, channels {args.channels}, "
        f"res blocks {args.res_blocks}, {args.codes} codes x {args.dim}, "
        f"batch {args.batch}"
    )
    if not args.skip_speed:
        rows = []
        for precision in ("fp32", "bf16"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    *(argv or sys.argv[1:]),
                    "--phase",
                    precision,
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"params: {rows[0]['params']:,}")
        print(
            f"{'precision':10s}{'train s/step':>14s}{'train Mvox/s':>14s}"
            f"{'encode vol/s':>14s}{'decode vol/s':>14s}{'peak RSS GiB':>14s}"
        )
        for r in rows:
            print(
                f"{r['precision']:10s}{r['train_step_s']:14.3f}"
                f"{r['train_voxels_per_s'] / 1e6:14.2f}"
                f"{r['encode_volumes_per_s']:14.2f}"
                f"{r['decode_volumes_per_s']:14.2f}{r['peak_rss_gib']:14.2f}"
            )
        f32, b16 = rows
        print(
            f"bf16 / fp32 speed-up: training "
            f"{f32['train_step_s'] / b16['train_step_s']:.2f}x, encode "
            f"{b16['encode_volumes_per_s'] / f32['encode_volumes_per_s']:.2f}x, decode "
            f"{b16['decode_volumes_per_s'] / f32['decode_volumes_per_s']:.2f}x"
        )
    if args.steps > 0:
        q = quality(args)
        print(
            f"quality after {q['steps']} steps ({q['precision']}, "
            f"{q['train_minutes']:.1f} min): "
            f"held-out PSNR {q['heldout_psnr_db']:.2f} dB "
            f"(min {q['heldout_psnr_min_db']:.2f}), SSIM {q['heldout_ssim']:.4f} "
            f"(min {q['heldout_ssim_min']:.4f}), codebook usage "
            f"{q['heldout_codebook_usage']:.1%}, perplexity "
            f"{q['heldout_perplexity']:.1f}, final train L1 {q['final_train_l1']:.4f}"
        )


if __name__ == "__main__":
    main()
