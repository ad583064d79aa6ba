"""Metrics that tell anatomy from blur and from artefacts.

A gradient-energy "sharpness" cannot tell fine anatomy from a grid pattern:
both add gradient. These measures can, and each orders the calibration
ladder (real; blurred by 0.5, 1.0, 1.5 voxel; a checkerboard added) as a
radiologist would (``tools/bench_metric_ladder.py`` prints it):

* :func:`spectral_spike`: along each axis, the 1-D power at the frequency of
  a given period (2, 4 or 8 voxels, the strides of a decoder) over the mean
  power of its two neighbouring frequencies. Anatomy has a smooth spectrum
  (about 1.0); a decoder whose sub-positions drift apart leaves a peak. Blur
  does not raise it.
* :func:`spectrum_distance`: mean absolute difference of the log10 radially
  averaged 3-D power spectra of two sets. Blur removes power at high
  frequencies and a grid adds it: both move the distance away from 0.
* :func:`tissue_dice`: Dice of tissue labels (three intensity classes of the
  real volume, applied to both volumes): whether the cortical ribbon, the
  grey/white boundary and the ventricles sit where they were.
"""

import numpy as np

TISSUE_CLASSES = ("csf", "gm", "wm")


def _volumes(volumes):
    v = np.asarray(volumes, dtype=np.float64)
    if v.ndim == 3:
        v = v[None]
    if v.ndim != 4 or min(v.shape[1:]) < 8:
        raise ValueError(
            "volumes should be (X, Y, Z) or (N, X, Y, Z) with each axis >= 8, "
            f"got shape {v.shape}"
        )
    return v


def axis_power_spectra(volumes):
    """Mean 1-D power spectrum along each axis, ``(3,)`` arrays of ``n//2 + 1``.

    Each line of voxels along an axis is Fourier transformed (its mean
    removed), and the powers averaged over lines and volumes.
    """
    v = _volumes(volumes)
    spectra = []
    for axis in (1, 2, 3):
        lines = v - v.mean(axis=axis, keepdims=True)
        power = np.abs(np.fft.rfft(lines, axis=axis)) ** 2
        other = tuple(a for a in range(4) if a != axis)
        spectra.append(power.mean(axis=other))
    return spectra


def spectral_spike(volumes, period=2):
    """Power at a ``period``-voxel frequency over its neighbours', worst axis.

    Parameters
    ----------
    volumes : ndarray (X, Y, Z) or (N, X, Y, Z)
        The spectra are averaged over volumes before the ratio is taken.
    period : int
        2, 4, 8, ...: the period in voxels whose peak to measure; each axis
        must be a multiple of it.

    Returns
    -------
    spike : float
        The largest ratio over the three axes (1.0: no peak).
    """
    v = _volumes(volumes)
    if period < 2 or any(n % period or n < 2 * period for n in v.shape[1:]):
        raise ValueError(
            f"period should be >= 2 and divide every axis {v.shape[1:]} at least "
            f"twice, got {period}"
        )
    ratios = []
    for n, power in zip(v.shape[1:], axis_power_spectra(v)):
        k = n // period
        # the neighbours of Nyquist (period 2) are k - 1 on both sides
        below, above = (
            power[k - 1],
            power[k + 1] if k + 1 < len(power) else power[k - 1],
        )
        ratios.append(power[k] / max(0.5 * (below + above), 1e-30))
    return float(max(ratios))


def spectral_spikes(volumes, periods=(2, 4, 8)):
    """:func:`spectral_spike` at each period, ``{period: spike}``."""
    return {int(p): spectral_spike(volumes, p) for p in periods}


def grid_spikes(volumes):
    """:func:`spectral_spike` at the periods 2, 4 and 8 that divide the grid
    (the strides of 2x, 4x and 8x decoders), keyed by str (for JSON)."""
    shape = np.shape(volumes)[-3:]
    periods = [p for p in (2, 4, 8) if all(n % p == 0 and n >= 2 * p for n in shape)]
    return {str(p): v for p, v in spectral_spikes(volumes, periods).items()}


def radial_power_spectrum(volumes, *, bin_width=None):
    """Radially averaged 3-D power spectrum, averaged over volumes.

    Frequencies are in cycles per voxel, from 0 to the corner of the
    spectrum (``sqrt(3)/2``, where a 3-D checkerboard lies), in shells of
    ``bin_width`` (default: 1 / the smallest axis). Returns
    ``(centres, power)``.
    """
    v = _volumes(volumes)
    shape = v.shape[1:]
    width = 1.0 / min(shape) if bin_width is None else float(bin_width)
    freqs = np.meshgrid(
        *(np.fft.fftfreq(n) for n in shape[:2]),
        np.fft.rfftfreq(shape[2]),
        indexing="ij",
    )
    shell = (np.sqrt(sum(f**2 for f in freqs)) / width).astype(int).ravel()
    bins = shell.max() + 1
    counts = np.bincount(shell, minlength=bins)
    total = np.zeros(bins)
    for volume in v:
        power = np.abs(np.fft.rfftn(volume - volume.mean())) ** 2
        total += np.bincount(shell, power.ravel(), minlength=bins)
    keep = counts > 0
    centres = (np.arange(bins) + 0.5) * width
    return centres[keep], total[keep] / counts[keep] / len(v)


def spectrum_distance(real, other, *, min_frequency=0.02):
    """Mean |log10 power ratio| between two sets' radial spectra.

    0 means the same spectrum; 0.1 is a 26% power difference on average
    over the shells from ``min_frequency`` cycles per voxel to the corner of
    the spectrum. Blur (power lost at high frequencies) and grids or noise
    (power added) both raise it. Both sets need the same volume shape.
    """
    f, p_real = radial_power_spectrum(real)
    f_other, p_other = radial_power_spectrum(other)
    if len(f) != len(f_other) or not np.allclose(f, f_other):
        raise ValueError("spectrum_distance needs volumes of one shape in both sets")
    keep = f >= min_frequency
    ratio = np.log10(np.maximum(p_other[keep], 1e-30) / np.maximum(p_real[keep], 1e-30))
    return float(np.mean(np.abs(ratio)))


def tissue_thresholds(volume, *, background=0.02, iterations=50):
    """Two intensities splitting a volume's brain into CSF < GM < WM.

    One-dimensional k-means with three classes (started at the 10th, 50th
    and 90th percentiles) on the voxels above ``background``; the
    thresholds lie midway between neighbouring class means.
    """
    v = np.asarray(volume, dtype=np.float64)
    brain = v[v > background]
    if brain.size < 3:
        raise ValueError(f"volume has fewer than 3 voxels above {background}")
    centres = np.percentile(brain, [10, 50, 90])
    for _ in range(iterations):
        labels = np.digitize(brain, 0.5 * (centres[1:] + centres[:-1]))
        new = np.array(
            [
                brain[labels == k].mean() if (labels == k).any() else centres[k]
                for k in range(3)
            ]
        )
        if np.allclose(new, centres):
            break
        centres = new
    return 0.5 * (centres[1:] + centres[:-1])


def tissue_labels(volume, thresholds, *, background=0.02):
    """0 background, 1 CSF, 2 GM, 3 WM by intensity thresholds."""
    v = np.asarray(volume, dtype=np.float64)
    return np.where(v > background, 1 + np.digitize(v, thresholds), 0)


def tissue_dice(real, reconstruction, *, background=0.02):
    """Dice of CSF, GM and WM between a real volume and its reconstruction.

    Both are labelled by the real volume's three intensity classes
    (:func:`tissue_thresholds`), so a blurred or shifted boundary costs
    overlap. Returns ``{"csf": d, "gm": d, "wm": d}``.
    """
    real = np.asarray(real, dtype=np.float64)
    reconstruction = np.asarray(reconstruction, dtype=np.float64)
    if real.shape != reconstruction.shape or real.ndim != 3:
        raise ValueError(
            "tissue_dice needs two 3-D volumes of one shape, got "
            f"{real.shape} and {reconstruction.shape}"
        )
    thresholds = tissue_thresholds(real, background=background)
    a = tissue_labels(real, thresholds, background=background)
    b = tissue_labels(reconstruction, thresholds, background=background)
    out = {}
    for k, name in enumerate(TISSUE_CLASSES, start=1):
        both = np.count_nonzero((a == k) & (b == k))
        size = np.count_nonzero(a == k) + np.count_nonzero(b == k)
        out[name] = float(2 * both / size) if size else 1.0
    return out


def mean_tissue_dice(real, reconstructions, **kwargs):
    """:func:`tissue_dice` averaged over pairs of two ``(N, X, Y, Z)`` sets."""
    dice = [tissue_dice(a, b, **kwargs) for a, b in zip(real, reconstructions)]
    return {name: float(np.mean([d[name] for d in dice])) for name in TISSUE_CLASSES}
