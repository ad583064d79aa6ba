"""Benchmark autoencoder recipes at equal CPU time on the default cohort.

Each recipe (quantizer, compression, output stage, losses) trains on random
64^3 patches of the default model's training volumes (128^3 at 1.5 mm,
``tools/train_default_model.py --stop-after cohort``) for the same number of
minutes: its step time is measured first, then it trains for the steps that
fit the budget (so every recipe gets its whole learning-rate schedule). The
whole held-out volumes are then reconstructed and compared with the real
ones: PSNR, SSIM, tissue Dice, spectral spikes at periods 2/4/8, radial
spectrum distance, classifier two-sample accuracy, code usage, plus the
training step time and the diffusion UNet's step time and memory at that
latent size (the cost a choice puts on the second stage).

``--ladder`` first prints the calibration ladder that validates the metrics
(real vs blurred by 0.5 / 1.0 / 1.5 voxel, and a checkerboard added).

    python tools/bench_autoencoder.py --ladder
    python tools/bench_autoencoder.py --recipes today fsq8x rvq8x fsq4x --minutes 8
    python tools/bench_autoencoder.py --capacity scratch/bench_autoencoder/today.npz
"""

import argparse
import json
import math
from pathlib import Path
import resource
import subprocess
import sys
import time

import numpy as np

FSQ16 = {"kind": "fsq", "levels": [8, 8, 8, 5, 5, 5]}
EIGHT_X = {"channels": (32, 64, 128), "num_res_blocks": 1}
FOUR_X = {"channels": (32, 64), "num_res_blocks": 1}
TODAY_FIT = {"structure_losses": {"gradient": 1.0}, "adversarial_weight": 0.02}

# (VQVAE3D options, fit options) of each recipe
RECIPES = {
    "today": ({**EIGHT_X, "num_embeddings": 1024, "embedding_dim": 8}, TODAY_FIT),
    "today_interp": (
        {
            **EIGHT_X,
            "num_embeddings": 1024,
            "embedding_dim": 8,
            "output_stage": "interpolate",
        },
        TODAY_FIT,
    ),
    "fsq8x": (
        {**EIGHT_X, "quantizer": FSQ16, "output_stage": "interpolate"},
        TODAY_FIT,
    ),
    "rvq8x": (
        {
            **EIGHT_X,
            "quantizer": {"kind": "rvq", "stages": 2},
            "num_embeddings": 1024,
            "embedding_dim": 8,
            "output_stage": "interpolate",
        },
        TODAY_FIT,
    ),
    "fsq8x_wide": (
        {
            **EIGHT_X,
            "quantizer": {"kind": "fsq", "levels": [8] * 4 + [5] * 8},
            "output_stage": "interpolate",
        },
        TODAY_FIT,
    ),
    "fsq4x": ({**FOUR_X, "quantizer": FSQ16, "output_stage": "interpolate"}, TODAY_FIT),
}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cohort", default="scratch/default_model_v3/cohort.npy")
    p.add_argument("--n-train", type=int, default=360)
    p.add_argument("--n-heldout", type=int, default=20)
    p.add_argument("--recipes", nargs="*", choices=sorted(RECIPES), default=[])
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--ladder", action="store_true")
    p.add_argument(
        "--figure",
        nargs="*",
        default=[],
        metavar="RECIPE",
        help="write recipes.png: mid-slices of a held-out volume and its "
        "reconstruction by each recipe already run (--out)",
    )
    p.add_argument(
        "--capacity",
        nargs="*",
        default=[],
        metavar="MODEL",
        help="autoencoder files: can a discriminator alone tell their "
        "reconstructions from real (64^3 patches, 20 + 20 volumes)?",
    )
    p.add_argument("--out", default="scratch/bench_autoencoder")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def report(real, other, *, seed=0):
    """Every reconstruction measure of ``other`` against ``real``."""
    from dipy_ext.metrics import (
        classifier_two_sample_test,
        get_feature_extractor,
        psnr,
        ssim,
    )
    from dipy_ext.metrics.spectrum import (
        mean_tissue_dice,
        spectral_spikes,
        spectrum_distance,
    )

    extractor = get_feature_extractor("stats")
    return {
        "psnr_db": float(np.mean([psnr(a, b) for a, b in zip(real, other)])),
        "ssim": float(np.mean([ssim(a, b) for a, b in zip(real, other)])),
        "tissue_dice": mean_tissue_dice(real, other),
        "spectral_spike": spectral_spikes(other),
        "spectrum_distance": spectrum_distance(real, other),
        "c2st": classifier_two_sample_test(
            extractor(real), extractor(other), seed=seed
        )["accuracy"],
    }


def checkerboard(shape, amplitude):
    grid = np.indices(shape).sum(axis=0) % 2
    return amplitude * (2.0 * grid - 1.0)


def ladder(real):
    """The calibration ladder: every measure must order these correctly."""
    from scipy import ndimage

    rows = {"real (other half)": None}
    for sigma in (0.5, 1.0, 1.5):
        rows[f"blur {sigma}"] = np.stack(
            [ndimage.gaussian_filter(v, sigma) for v in real]
        )
    board = checkerboard(real.shape[1:], 0.03)
    rows["checkerboard 0.03"] = np.stack([np.where(v > 0, v + board, 0) for v in real])
    out = {}
    half = len(real) // 2
    for name, volumes in rows.items():
        if volumes is None:  # two halves of the real set: the floor of each measure
            r = report(real[:half], real[half : 2 * half])
            r["psnr_db"] = r["ssim"] = float("nan")
            r["tissue_dice"] = {}
        else:
            r = report(real, volumes)
        out[name] = r
        print(name, json.dumps(r, default=float), flush=True)
    return out


def unet_cost(latent_shape, latent_channels, batch=8, steps=4):
    """Seconds per training step and peak memory (GiB, the process's) of the
    default model's UNet on latents of this shape, in a child process."""
    code = (
        "import json, sys; sys.argv = ['x']; import bench_autoencoder as b; "
        "print(json.dumps(b.unet_probe("
        f"{tuple(latent_shape)}, {latent_channels}, {batch}, {steps})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def unet_probe(
    latent_shape,
    latent_channels,
    batch,
    steps,
    channels=(32, 64, 128),
    attention_levels=(False, True, True),
):
    """Median seconds per training step (the first, which traces, left
    out), peak memory (GiB, the process's) and parameters of a conditional
    UNet (by default the default model's) on random latents."""
    import dipy_ext.nn._backend  # noqa: F401, I001 - oneDNN on before keras

    from dipy_ext.nn.unet import build_unet

    unet = build_unet(
        latent_shape,
        latent_channels,
        channels=channels,
        num_res_blocks=1,
        attention_levels=attention_levels,
        condition_dim=2,
    )
    unet.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *latent_shape, latent_channels)).astype("float32")
    inputs = [
        x,
        rng.uniform(0, 1000, batch).astype("float32"),
        rng.standard_normal((batch, 2)).astype("float32"),
        np.zeros(batch, "float32"),
    ]
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        unet.train_on_batch(inputs, x)
        times.append(time.perf_counter() - t0)
    return {
        "unet_step_seconds": float(np.median(times[1:])),
        "unet_peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "unet_params": unet.count_params(),
    }


def figure(names, args, heldout, index=0):
    """Three mid-slices of one held-out volume, then of its reconstruction
    by each recipe (saved by earlier runs into ``--out``)."""
    from dipy_ext.viz import mosaic

    out = Path(args.out)
    volumes = [heldout[index]]
    volumes += [np.load(out / f"{n}_recon.npy")[index] for n in names]
    path = out / "recipes.png"
    mosaic(volumes, path, titles=["real", *names], vmax=1.0)
    print("wrote", path, flush=True)


def capacity(path, args, train, heldout):
    """Held-out accuracy of a discriminator trained alone against a frozen
    autoencoder (the check joint training needs to pass)."""
    from dipy_ext.nn.autoencoder_training import discriminator_capacity
    from dipy_ext.nn.vqvae import VQVAE3D

    vq = VQVAE3D.load(path)
    real = np.asarray(train[:20])
    result = discriminator_capacity(
        real,
        vq.predict(real),
        heldout,
        vq.predict(heldout),
        patch=args.patch,
        steps=300,
        batch_size=args.batch,
        learning_rate=2 * args.lr,
        seed=args.seed,
    )
    print(f"capacity {path}:", json.dumps(result), flush=True)
    return result


def build(name, args, shape):
    from dipy_ext.nn.vqvae import VQVAE3D

    options, _ = RECIPES[name]
    return VQVAE3D(
        input_shape=shape,
        seed=args.seed,
        verbose=False,
        background_threshold=0.05,
        **options,
    )


def step_seconds(name, args, train):
    """Median seconds per training step of a recipe (a few steps, alone)."""
    from step_timing import step_timer

    timer = step_timer()
    build(name, args, train.shape[1:]).fit(
        np.asarray(train[:8]),
        epochs=1,
        batch_size=args.batch,
        patch_shape=(args.patch,) * 3,
        callbacks=[timer],
        **RECIPES[name][1],
    )
    return float(np.median(timer.times[1:]))


def train_recipe(name, args, train, heldout, step):
    """Train for the steps that fit ``--minutes`` at ``step`` s/step, then
    measure the reconstructions of the held-out volumes."""
    vq = build(name, args, train.shape[1:])
    steps = max(int(args.minutes * 60 / step), 10)
    # whole epochs over a slice of the training volumes: the full schedule
    epochs = math.ceil(steps * args.batch / len(train))
    subset = np.asarray(train[: steps * args.batch // epochs])
    t0 = time.perf_counter()
    hist = vq.fit(
        subset,
        epochs=epochs,
        batch_size=args.batch,
        learning_rate=args.lr,
        patch_shape=(args.patch,) * 3,
        flip_augment=True,
        **RECIPES[name][1],
    )
    minutes = (time.perf_counter() - t0) / 60
    recon = vq.predict(heldout)
    r = report(heldout, recon, seed=args.seed)
    usage = vq.codebook_usage(heldout)
    bits = np.log2(vq.num_embeddings) * vq.quantizer.index_channels
    r.update(
        recipe=name,
        step_seconds=step,
        steps=epochs * (len(subset) // args.batch),
        train_minutes=minutes,
        latent_shape=list(vq.latent_shape),
        embedding_dim=vq.embedding_dim,
        codebook_usage=usage["codebook_usage"],
        bits_per_position=float(bits),
        disc_accuracy=hist.history.get("disc_accuracy", [None])[-1],
        **unet_cost(vq.latent_shape, vq.embedding_dim),
    )
    vq.save(Path(args.out) / f"{name}.npz")
    return r, recon


def main(argv=None):
    args = parse(argv)
    import dipy_ext.nn._backend  # noqa: F401, I001 - oneDNN on before keras

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cohort = np.load(args.cohort, mmap_mode="r")
    heldout = np.asarray(cohort[args.n_train : args.n_train + args.n_heldout])
    results_file = out / "results.json"  # earlier runs' results are kept
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    if args.ladder:
        results["ladder"] = ladder(heldout)
    train = cohort[: args.n_train]
    if args.figure:
        figure(args.figure, args, heldout)
    for path in args.capacity:
        results[f"capacity {path}"] = capacity(path, args, train, heldout)
    # step times first, one after another on an otherwise idle machine
    steps = {name: step_seconds(name, args, train) for name in args.recipes}
    print("seconds per step:", steps, flush=True)
    for name in args.recipes:
        r, recon = train_recipe(name, args, train, heldout, steps[name])
        results[name] = r
        print(json.dumps(r, default=float), flush=True)
        np.save(out / f"{name}_recon.npy", recon[:4])
        results_file.write_text(json.dumps(results, indent=1, default=float))
    results_file.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
