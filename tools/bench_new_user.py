"""The autoencoder a new user gets: ``dipy_train_vqvae3d`` with every
option at its default, on NIfTI files, measured on held-out volumes.

What issue 21 asked to report: an MNI-derived cohort (``mni_cohort`` with a
seed the default model does not use, written as 1.5 mm NIfTI files), the
console script run on the training files as a user would (its grid, 64^3 at
3 mm, its quantizer, epochs and losses all at their defaults), then the held-
out files preprocessed the same way and reconstructed: PSNR, SSIM, tissue
Dice, spectral spikes, spectrum distance, classifier two-sample accuracy, and
a PNG of mid-slices (real above, reconstruction below).

    python tools/bench_new_user.py --out scratch/new_user
"""

import argparse
import json
from pathlib import Path
import subprocess
import sys
import time

import numpy as np


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="scratch/new_user")
    p.add_argument("--n-train", type=int, default=40)
    p.add_argument("--n-heldout", type=int, default=20)
    p.add_argument("--seed", type=int, default=7, help="cohort seed")
    return p.parse_args(argv)


def write_cohort(args, out):
    """Training and held-out NIfTI files (1.5 mm, 128^3), made once."""
    import nibabel as nib

    from dipy_ext.data.mni import mni_cohort

    train, heldout = out / "train", out / "heldout"
    if (heldout / "done").exists():
        return train, heldout
    n = args.n_train + args.n_heldout
    volumes, affine = mni_cohort(n, shape=(128,) * 3, voxel_size=1.5, rng=args.seed)
    for folder, members in (
        (train, range(args.n_train)),
        (heldout, range(args.n_train, n)),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        for i in members:
            image = nib.Nifti1Image(volumes[i].astype(np.float32), affine)
            nib.save(image, folder / f"sub-{i:03d}_T1w.nii.gz")
    (heldout / "done").write_text("")
    return train, heldout


def figure(real, recon, path, count=4):
    """Mid-slices of a few volumes, each beside its reconstruction."""
    from dipy_ext.viz import mosaic

    pairs = [v for k in range(count) for v in (real[k], recon[k])]
    titles = [t for k in range(count) for t in (f"real {k}", f"reconstruction {k}")]
    mosaic(pairs, path, titles=titles, vmax=1.0)


def main(argv=None):
    args = parse(argv)
    import dipy_ext.nn._backend  # noqa: F401, I001 - oneDNN on before keras
    from dipy_ext.data.io import find_nifti_files, preprocess_cohort
    from dipy_ext.metrics import reconstruction_report
    from dipy_ext.nn.vqvae import VQVAE3D

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, heldout = write_cohort(args, out)
    model = out / "model" / "vqvae3d.npz"
    start = time.perf_counter()
    if not model.exists():
        script = Path(sys.executable).parent / "dipy_train_vqvae3d"
        subprocess.run(
            [str(script), str(train), "--out_dir", str(model.parent)], check=True
        )
    minutes = (time.perf_counter() - start) / 60
    vq = VQVAE3D.load(model)
    real, _ = preprocess_cohort(
        find_nifti_files(str(heldout)),
        shape=vq.input_shape,
        voxel_size=vq.voxel_size,
    )
    real = np.asarray(real)
    recon = vq.predict(real)
    report = reconstruction_report(real, recon, seed=0)
    report["training_minutes"] = minutes
    report["grid"] = {"shape": vq.input_shape, "voxel_size": vq.voxel_size}
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    figure(real, recon, out / "new_user_reconstructions.png")
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
