"""Benchmark VQVAE3D: training speed, and realism of its reconstructions.

Speed (``--speed``): seconds per training step and voxels/s at 64^3,
batch 2, float32 and bfloat16, for the configuration shipped before this
benchmark existed ("today": channels 16,32,64, residual blocks 1,2,2 at
full resolution, 4x) and the current default (pixel shuffle, 4x), each in
its own child process (peak memory is its own); ``--peer`` adds MONAI's
VQVAE (PyTorch CPU, run from the Python given by ``--peer-python``, an
environment with ``torch`` and ``monai``; never a dependency of dipy_ext).

Quality (``--recipes``): each named recipe trains for a fixed wall-clock
budget on the MNI-derived cohort (``dipy_ext.data.mni.mni_cohort``, 64^3 at
3 mm, training and held-out volumes from different seeds), then reports on
the held-out volumes: PSNR, SSIM, sharpness ratio (reconstruction over
real, 1 = as sharp), and the classifier two-sample test of reconstructions
vs real (0.5 = indistinguishable), next to two controls: other real
volumes, and real volumes blurred by a Gaussian of 0.7 voxel.

    python tools/bench_vqvae.py --speed --peer --peer-python /tmp/peer/bin/python
    python tools/bench_vqvae.py --recipes l1 gradient ssim adversarial --minutes 7
    python tools/bench_vqvae.py --recipes adversarial --minutes 30 --save vq.npz
    python tools/bench_vqvae.py --large --minutes 10   # 128^3 / 1.5 mm, 8x, patches
"""

import argparse
import json
from pathlib import Path
import resource
import subprocess
import sys
import time

import numpy as np
from step_timing import step_timer

CONFIGS = {
    "today": {
        "channels": (16, 32, 64),
        "num_res_blocks": (1, 2, 2),
        "pixel_shuffle": False,
    },
    "lean-2": {"channels": (32, 64), "num_res_blocks": (2, 2)},
    "default": {"channels": (32, 64), "num_res_blocks": (1, 1)},
    "8x": {"channels": (32, 64, 128), "num_res_blocks": (1, 1, 1)},
}

# fit() options of each quality recipe (all on the "default" network)
RECIPES = {
    "l1": {},
    "gradient": {"structure_losses": {"gradient": 1.0}},
    "ssim": {"structure_losses": {"ssim": 0.2}},
    "adversarial": {
        "structure_losses": {"gradient": 1.0},
        "adversarial_weight": 0.05,
        "adversarial_loss": "hinge",
    },
    "adversarial_0.02": {
        "structure_losses": {"gradient": 1.0},
        "adversarial_weight": 0.02,
        "adversarial_loss": "hinge",
    },
}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--speed", action="store_true")
    p.add_argument("--peer", action="store_true", help="also time MONAI's VQVAE")
    p.add_argument("--peer-python", default="/tmp/peer/bin/python")
    p.add_argument("--speed-steps", type=int, default=8)
    p.add_argument("--force-bf16", action="store_true", help="time bfloat16 on any CPU")
    p.add_argument(
        "--baseline-tree",
        help="a checkout of the code before this "
        "rework: its default configuration is timed as shipped",
    )
    p.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--recipes", nargs="*", choices=sorted(RECIPES), default=[])
    p.add_argument(
        "--large", action="store_true", help="128^3 / 1.5 mm, 8x, 64^3 patches"
    )
    p.add_argument("--large-recipe", choices=sorted(RECIPES), default="gradient")
    p.add_argument(
        "--minutes", type=float, default=7.0, help="training budget per recipe"
    )
    p.add_argument("--train", type=int, default=120, help="training volumes")
    p.add_argument("--val", type=int, default=20, help="held-out volumes")
    p.add_argument("--batch", type=int, default=2, help="batch of the speed runs")
    p.add_argument("--quality-batch", type=int, default=4)
    p.add_argument(
        "--patch",
        type=int,
        default=32,
        help="cube side of the training patches of the 64^3 quality runs "
        "(0: whole volumes); the 128^3 run trains on 64^3 patches",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bfloat16 mixed precision (default: where the CPU has it natively)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="/tmp/dipy_ext_bench_cache")
    p.add_argument("--save", help="write the last trained model here")
    p.add_argument("--json", help="write every result here")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------- speed
def native_bf16():
    """Whether this CPU computes bfloat16 natively (else TF emulates it, slowly)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def speed_phase(args, config, precision):
    """Child process: steady-state training and inference speed of a config."""
    from dipy_ext.nn.vqvae import VQVAE3D

    shape = (64, 64, 64)
    options = dict(CONFIGS[config])
    if config == "today" and args.baseline:
        options.pop("pixel_shuffle")  # the code as shipped had no such option
    vq = VQVAE3D(
        input_shape=shape, **options, mixed_precision=precision == "bf16", seed=0
    )
    # speed does not depend on the content
    data = np.random.default_rng(0).random(
        (args.batch * (args.speed_steps + 2), *shape)
    )
    data = data.astype(np.float32)
    timer = step_timer()
    vq.fit(data, epochs=1, batch_size=args.batch, callbacks=[timer])
    step = float(np.median(timer.times[2:]))
    latents = vq.encode(data[:2], batch_size=2)
    t0 = time.perf_counter()
    latents = vq.encode(data[:8], batch_size=2)
    enc = 8 / (time.perf_counter() - t0)
    vq.decode(latents[:2], batch_size=2)
    t0 = time.perf_counter()
    vq.decode(latents, batch_size=2)
    dec = 8 / (time.perf_counter() - t0)
    return {
        "config": f"{config} (code as shipped)" if args.baseline else config,
        "precision": precision,
        "params": vq.count_params(),
        "compression": shape[0] // vq.latent_shape[0],
        "train_step_s": step,
        "train_mvox_s": args.batch * 64**3 / step / 1e6,
        "encode_vol_s": enc,
        "decode_vol_s": dec,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


PEER_SCRIPT = """
import time, json, torch
from monai.networks.nets import VQVAE
torch.manual_seed(0)
net = VQVAE(spatial_dims=3, in_channels=1, out_channels=1, channels=(32, 64),
            num_res_channels=(32, 64), num_res_layers=2,
            downsample_parameters=((2, 4, 1, 1), (2, 4, 1, 1)),
            upsample_parameters=((2, 4, 1, 1, 0), (2, 4, 1, 1, 0)),
            num_embeddings=512, embedding_dim=8)
opt = torch.optim.Adam(net.parameters(), 1e-4)
x = torch.rand(BATCH, 1, 64, 64, 64)
times = []
for i in range(STEPS + 2):
    t0 = time.perf_counter()
    opt.zero_grad()
    recon, q_loss = net(x)
    loss = (recon - x).abs().mean() + q_loss
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t0)
times = sorted(times[2:])
step = times[len(times) // 2]
print(json.dumps({"config": "MONAI VQVAE (32,64), 2 res layers, 4x",
                  "precision": "fp32",
                  "params": sum(p.numel() for p in net.parameters()), "compression": 4,
                  "train_step_s": step, "train_mvox_s": BATCH * 64**3 / step / 1e6}))
"""


def speed(args):
    import os

    precisions = ["fp32"] + (["bf16"] if native_bf16() or args.force_bf16 else [])
    if "bf16" not in precisions:
        print(
            "bf16 not timed: this CPU has no native bfloat16 (TensorFlow emulates "
            "it, 4-15x slower than float32); --force-bf16 times it anyway"
        )
    runs = [(c, p, None) for c in CONFIGS for p in precisions]
    if args.baseline_tree:
        runs.insert(0, ("today", "fp32", args.baseline_tree))
    rows = []
    for config, precision, tree in runs:
        command = [
            sys.executable,
            __file__,
            "--phase",
            f"{config}:{precision}",
            "--batch",
            str(args.batch),
            "--speed-steps",
            str(args.speed_steps),
        ]
        env = dict(os.environ)
        if tree:
            # the shipped code, run as shipped (TensorFlow's own oneDNN default)
            env["PYTHONPATH"] = str(tree)
            env.pop("TF_ENABLE_ONEDNN_OPTS", None)
            command.append("--baseline")
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, env=env
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    if args.peer:
        script = PEER_SCRIPT.replace("BATCH", str(args.batch)).replace(
            "STEPS", str(args.speed_steps)
        )
        out = subprocess.run(
            [args.peer_python, "-c", script], capture_output=True, text=True, check=True
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"\nVQ-VAE training speed, 64^3, batch {args.batch} "
        f"(median step of {args.speed_steps})"
    )
    print(
        f"{'config':40s}{'prec':>6s}{'params':>10s}{'f':>3s}{'s/step':>9s}"
        f"{'Mvox/s':>8s}{'enc/s':>7s}{'dec/s':>7s}{'RSS GiB':>8s}"
    )
    for r in rows:
        print(
            f"{r['config']:40s}{r['precision']:>6s}{r['params']:>10,d}{r['compression']:>3d}"
            f"{r['train_step_s']:9.3f}{r['train_mvox_s']:8.2f}"
            f"{r.get('encode_vol_s', float('nan')):7.2f}"
            f"{r.get('decode_vol_s', float('nan')):7.2f}"
            f"{r.get('peak_rss_gib', float('nan')):8.2f}"
        )
    best = {}
    for r in rows:
        best[r["config"]] = min(best.get(r["config"], np.inf), r["train_step_s"])
    for name in best:
        if name != "default" and not name.startswith("MONAI"):
            print(
                f"default vs {name} (best precision each): "
                f"{best[name] / best['default']:.2f}x faster"
            )
    peer = [r for r in rows if r["config"].startswith("MONAI")]
    if peer:
        print(
            f"default vs MONAI voxels/s: "
            f"{peer[0]['train_step_s'] / best['default']:.2f}x"
        )
    return rows


# ----------------------------------------------------------------- quality
def cohort(args, shape, voxel_size, n, seed):
    from dipy_ext.data.mni import mni_cohort

    path = Path(args.cache) / f"mni_{shape[0]}_{voxel_size}_{n}_{seed}.npy"
    if path.exists():
        return np.load(path)
    volumes, _ = mni_cohort(
        n, shape=shape, voxel_size=voxel_size, rng=seed, progress=True
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, volumes)
    return volumes


def train_for(vq, train, args, options):
    """Train for about ``args.minutes``: steps estimated from a short timed run.

    With an adversarial loss, the first third of the run is the
    reconstruction-only warm-up.
    """
    from dipy_ext.nn.vqvae import VQVAE3D

    probe = VQVAE3D.from_config(vq.get_config(), mixed_precision=vq.mixed_precision)
    timer = step_timer()
    batch = args.quality_batch
    probe.fit(
        train[: batch * 8], epochs=1, batch_size=batch, callbacks=[timer], **options
    )
    step_s = float(np.median(timer.times[2:]))
    steps_per_epoch = int(np.ceil(len(train) / batch))
    epochs = max(1, int(args.minutes * 60 / step_s / steps_per_epoch))
    options = dict(options)
    if options.get("adversarial_weight"):
        options["adversarial_start"] = epochs * steps_per_epoch // 3
    t0 = time.perf_counter()
    history = vq.fit(
        train,
        epochs=epochs,
        batch_size=batch,
        learning_rate=args.lr,
        flip_augment=True,
        **options,
    )
    return {
        "batch": batch,
        "patch": options.get("patch_shape"),
        "step_s": step_s,
        "steps": epochs * steps_per_epoch,
        "adversarial_start": options.get("adversarial_start"),
        "train_minutes": (time.perf_counter() - t0) / 60,
        "final": {k: float(v[-1]) for k, v in history.history.items()},
    }


def realism(val, recon, train):
    from scipy import ndimage

    from dipy_ext.metrics import reconstruction_report
    from dipy_ext.metrics.features import get_feature_extractor
    from dipy_ext.metrics.sets import classifier_two_sample_test

    report = reconstruction_report(val, recon)
    stats = get_feature_extractor("stats")
    blurred = np.stack([ndimage.gaussian_filter(v, 0.7) for v in val])
    report["controls_c2st"] = {
        "other_real": classifier_two_sample_test(stats(val), stats(train[: len(val)]))[
            "accuracy"
        ],
        "blurred_0.7": classifier_two_sample_test(stats(val), stats(blurred))[
            "accuracy"
        ],
    }
    return report


def quality(args, recipe, *, large=False):
    from dipy_ext.nn.vqvae import VQVAE3D

    if large:
        shape, voxel, config, patch = (128,) * 3, 1.5, CONFIGS["8x"], (64, 64, 64)
    else:
        patch = (args.patch,) * 3 if args.patch else None
        shape, voxel, config = (64,) * 3, 3.0, CONFIGS["default"]
    train = cohort(args, shape, voxel, args.train, args.seed)
    val = cohort(args, shape, voxel, args.val, args.seed + 1000)
    vq = VQVAE3D(input_shape=shape, **config, mixed_precision=args.bf16, seed=args.seed)
    options = dict(RECIPES[recipe])
    if patch:
        options["patch_shape"] = patch
    run = train_for(vq, train, args, options)
    recon = vq.predict(val, batch_size=1)
    out = {
        "recipe": recipe,
        "grid": f"{shape[0]}^3 @ {voxel:g} mm",
        "compression": vq.compression,
        **run,
        **realism(val, recon, train),
    }
    if args.save:
        vq.save(args.save)
    return out


def print_quality(q):
    c = q["classifier_two_sample_test"]
    print(
        f"{q['recipe']:12s} {q['grid']:13s} {q['compression']}x, patches {q['patch']}, "
        f"batch {q['batch']}: {q['steps']:5d} steps {q['train_minutes']:5.1f} min "
        f"({q['step_s']:.2f} s/step): PSNR {q['psnr_db']:.2f} dB "
        f"(min {q['psnr_min_db']:.2f}), "
        f"SSIM {q['ssim']:.4f}, sharpness {q['sharpness_ratio']:.3f}, "
        f"C2ST recon vs real {c['accuracy']:.2f} "
        f"[{c['ci_low']:.2f}, {c['ci_high']:.2f}] "
        f"(controls: other real {q['controls_c2st']['other_real']:.2f}, "
        f"blurred {q['controls_c2st']['blurred_0.7']:.2f})",
        flush=True,
    )


def main(argv=None):
    args = parse(argv)
    if args.bf16 is None:
        args.bf16 = native_bf16()
    if args.phase:
        config, precision = args.phase.split(":")
        print(json.dumps(speed_phase(args, config, precision)))
        return
    results = {}
    if args.speed:
        results["speed"] = speed(args)
    quality_runs = [(r, False) for r in args.recipes] + (
        [(args.large_recipe, True)] if args.large else []
    )
    for recipe, large in quality_runs:
        q = quality(args, recipe, large=large)
        results.setdefault("quality", []).append(q)
        print_quality(q)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
