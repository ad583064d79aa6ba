"""Reconstruction and structure losses of the autoencoder (no pretrained nets).

The best brain autoencoders add a perceptual loss from a pretrained network
to L1; such weights cannot be downloaded everywhere, so these losses see
structure with nothing to download. Each takes ``(target, prediction)``
batches ``(N, X, Y, Z, 1)`` and returns one value per sample, in float32.

* :func:`gradient_difference_loss` (Mathieu et al. 2016) compares the
  magnitudes of finite differences: a blurred edge has smaller differences
  than a sharp one, so blur is penalised directly, where L1 barely sees it
  (a half-voxel blur of an edge costs little L1).
* :func:`ssim_loss` (1 - SSIM, Gaussian window) compares local means,
  contrasts and correlations: it weighs structure relative to local contrast,
  so faint grey/white boundaries count as much as the brain's outline.

``tools/bench_vqvae.py --compare-losses`` measures which of them help.
"""

import math

import numpy as np

from dipy_ext.nn._backend import ops

RECONSTRUCTION_LOSSES = ("l1", "l2")


def reconstruction_loss(kind="l1", background_weight=1.0, threshold=1e-3):
    """Per-sample L1/L2 error, background voxels (target < threshold) weighted."""
    if kind not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"loss should be 'l1' or 'l2', got {kind!r}")

    def loss(y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        err = y_true - ops.cast(y_pred, "float32")
        err = ops.abs(err) if kind == "l1" else err**2
        if background_weight != 1.0:
            err = err * ops.where(y_true > threshold, 1.0, background_weight)
        return ops.mean(err, axis=(1, 2, 3, 4))

    loss.__name__ = f"{kind}_reconstruction"
    return loss


def _differences(x):
    return (
        x[:, 1:, :, :, :] - x[:, :-1, :, :, :],
        x[:, :, 1:, :, :] - x[:, :, :-1, :, :],
        x[:, :, :, 1:, :] - x[:, :, :, :-1, :],
    )


def gradient_difference_loss(y_true, y_pred):
    """Mean absolute difference of |finite differences|, summed over 3 axes."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    total = 0.0
    for dt, dp in zip(_differences(y_true), _differences(y_pred)):
        total = total + ops.mean(ops.abs(ops.abs(dt) - ops.abs(dp)), axis=(1, 2, 3, 4))
    return total


def _gaussian_taps(sigma):
    radius = int(math.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return (g / g.sum()).astype(np.float32)


def _blur(x, taps):
    """Separable Gaussian filter of (N, X, Y, Z, 1) maps (zero-padded: works
    on patches smaller than the window)."""
    k = len(taps)
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[axis] = k
        x = ops.conv(x, ops.reshape(ops.convert_to_tensor(taps), shape), padding="same")
    return x


def ssim_loss(y_true, y_pred, *, sigma=1.5, data_range=1.0):
    """1 - mean 3D SSIM (Gaussian window of ``sigma`` voxels), per sample."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    taps = _gaussian_taps(sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    n = ops.shape(y_true)[0]
    # one filtering pass over the five maps stacked on the batch axis
    stacked = ops.concatenate(
        [y_true, y_pred, y_true * y_true, y_pred * y_pred, y_true * y_pred], axis=0
    )
    mu_t, mu_p, tt, pp, tp = (
        _blur(stacked, taps)[i * n : (i + 1) * n] for i in range(5)
    )
    var_t = tt - mu_t * mu_t
    var_p = pp - mu_p * mu_p
    cov = tp - mu_t * mu_p
    ssim = ((2 * mu_t * mu_p + c1) * (2 * cov + c2)) / (
        (mu_t * mu_t + mu_p * mu_p + c1) * (var_t + var_p + c2)
    )
    return 1.0 - ops.mean(ssim, axis=(1, 2, 3, 4))


STRUCTURE_LOSSES = {
    "gradient": gradient_difference_loss,
    "ssim": ssim_loss,
}


def check_structure_losses(weights):
    """``{name: weight}`` validated against :data:`STRUCTURE_LOSSES`."""
    weights = dict(weights or {})
    for name, w in weights.items():
        if name not in STRUCTURE_LOSSES:
            raise ValueError(
                f"structure loss should be one of {sorted(STRUCTURE_LOSSES)}, "
                f"got {name!r}"
            )
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise ValueError(
                f"weight of the {name!r} loss should be a finite number >= 0, got {w!r}"
            )
    return {k: float(v) for k, v in weights.items() if v > 0}
