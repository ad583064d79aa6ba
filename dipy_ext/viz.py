"""PNG figures: slice mosaics, training curves, evaluation summaries.

Figures are ``matplotlib.figure.Figure`` objects drawn straight to PNG,
never through pyplot: no display is needed and the user's matplotlib
backend and open figures are left as they were. Every writer goes through a
temporary file and a rename, so a failed run leaves no half-written PNG.
"""

from pathlib import Path

from matplotlib.figure import Figure
import numpy as np

from dipy_ext._files import atomic_path


def _save(fig, path):
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", facecolor=fig.get_facecolor())
    return Path(path)


def _slices(volume):
    """Mid axial, coronal and sagittal slices, oriented for display (RAS grid)."""
    x, y, z = (s // 2 for s in volume.shape)
    return (
        np.rot90(volume[:, :, z]),  # axial
        np.rot90(volume[:, y, :]),  # coronal
        np.rot90(volume[x, :, :]),  # sagittal
    )


def mosaic(volumes, path, *, titles=None, vmax=None):
    """Mid-slices of each volume: one column per volume, one row per view.

    Parameters
    ----------
    volumes : sequence of ndarray (X, Y, Z)
    path : str or Path
        PNG file to write.
    titles : list of str, optional
        One per volume.
    vmax : float, optional
        Upper grey level (default: the 99.5th percentile over all volumes).
    """
    volumes = [np.asarray(v, dtype=np.float32) for v in volumes]
    if not volumes:
        raise ValueError("mosaic needs at least one volume")
    vmax = (
        vmax
        or float(np.percentile(np.concatenate([v.ravel() for v in volumes]), 99.5))
        or 1.0
    )
    n = len(volumes)
    fig = Figure(figsize=(1.8 * n, 5.4), facecolor="black")
    axes = fig.subplots(3, n, squeeze=False)
    labels = ("axial", "coronal", "sagittal")
    for j, v in enumerate(volumes):
        for i, sl in enumerate(_slices(v)):
            ax = axes[i, j]
            ax.imshow(sl, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if i == 0 and titles:
                ax.set_title(titles[j], color="white", fontsize=8)
            if j == 0:
                ax.set_ylabel(labels[i], color="white", fontsize=8)
    fig.subplots_adjust(wspace=0.02, hspace=0.02)
    return _save(fig, path)


def comparison(rows, path, *, row_titles, vmax=None, diff_row=None):
    """Grid of axial mid-slices: one row per set of volumes (for example
    input / reconstruction / difference), one column per subject."""
    rows = [[np.asarray(v, np.float32) for v in r] for r in rows]
    n_rows, n_cols = len(rows), len(rows[0])
    fig = Figure(figsize=(1.8 * n_cols, 1.9 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            sl = _slices(v)[0]
            ax = axes[i, j]
            if diff_row is not None and i == diff_row:
                lim = float(np.abs(sl).max()) or 1.0
                ax.imshow(sl, cmap="RdBu_r", vmin=-lim, vmax=lim)
            else:
                ax.imshow(sl, cmap="gray", vmin=0, vmax=vmax or 1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row_titles[i], fontsize=8)
    return _save(fig, path)


def training_curves(history, path, *, title=None):
    """Plot every metric of a Keras History (or its ``.history`` dict)."""
    logs = getattr(history, "history", history)
    names = [k for k in logs if not k.startswith("val_")]
    if not names:
        raise ValueError("history has no metric to plot")
    fig = Figure(figsize=(3.6 * len(names), 3))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = np.arange(1, len(logs[name]) + 1)
        ax.plot(epochs, logs[name], label="train")
        if f"val_{name}" in logs:
            ax.plot(epochs, logs[f"val_{name}"], label="validation")
            ax.legend(fontsize=7)
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=9)
        if name in ("loss", "l1") and min(logs[name]) > 0:
            ax.set_yscale("log")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def evaluation_figure(real, synthetic, report, path, *, n_show=4):
    """Summary figure of :func:`~dipy_ext.metrics.report.evaluate_synthesis`.

    Axial slices of some real and synthetic volumes, intensity histograms,
    tissue fractions of both sets, and nearest-neighbour distances.
    """
    real = np.asarray(real)
    synthetic = np.asarray(synthetic)
    n_show = min(n_show, len(real), len(synthetic))
    fig = Figure(figsize=(2.0 * max(n_show, 4), 8.5))
    grid = fig.add_gridspec(3, max(n_show, 3))
    for j in range(n_show):
        for i, (vols, name) in enumerate(((real, "real"), (synthetic, "synthetic"))):
            ax = fig.add_subplot(grid[i, j])
            ax.imshow(_slices(vols[j])[0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name)
    ax = fig.add_subplot(grid[2, 0])
    bins = np.linspace(0.02, 1, 50)
    ax.hist(real[real > 0.02].ravel(), bins, density=True, alpha=0.5, label="real")
    ax.hist(
        synthetic[synthetic > 0.02].ravel(),
        bins,
        density=True,
        alpha=0.5,
        label="synthetic",
    )
    ax.set_title("brain intensities", fontsize=9)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[2, 1])
    if "tissue" in report:
        fr = np.asarray(report["tissue"]["real_fractions"])
        fs = np.asarray(report["tissue"]["synthetic_fractions"])
        pos = np.arange(3)
        ax.boxplot([fr[:, k] for k in range(3)], positions=pos - 0.18, widths=0.3)
        ax.boxplot([fs[:, k] for k in range(3)], positions=pos + 0.18, widths=0.3)
        ax.set_xticks(pos, ["CSF", "GM", "WM"])
        ax.set_title("tissue fractions (left real, right synthetic)", fontsize=8)
    else:
        ax.axis("off")
    ax = fig.add_subplot(grid[2, 2])
    mem = report["memorization"]
    ax.hist(mem["training_nn"], bins=20, alpha=0.5, label="training NN")
    ax.hist(mem["synthetic_nn"], bins=20, alpha=0.5, label="synthetic NN")
    ax.axvline(mem["threshold"], color="r", lw=1, label="near-copy threshold")
    ax.set_title("nearest-neighbour RMS distance", fontsize=9)
    ax.legend(fontsize=7)
    div = report["diversity"]
    fig.suptitle(
        f"diversity (MS-SSIM) real {div['real']:.3f} / "
        f"synthetic {div['synthetic']:.3f}; "
        f"FD {report['frechet_distance']:.3g} ({report['features']}); "
        f"C2ST acc {report['classifier_two_sample_test']['accuracy']:.2f}; "
        f"near copies {mem['flagged_fraction']:.0%}",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, path)
