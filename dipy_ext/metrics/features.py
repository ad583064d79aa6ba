"""Feature extractors: volume -> vector, for the set metrics.

Pretrained 3D medical networks (Med3D / MedicalNet) cannot be downloaded
here, so the extractor is pluggable: any callable from a volume to a 1D
vector, a Keras model file, or one of two defaults that need no download:

* ``"stats"``: a fixed set of intensity, texture and shape features
  (histogram of brain intensities, percentiles, gradient statistics, brain
  size and position, a 4^3 thumbnail);
* ``"spectrum"``: the log radially averaged power spectrum of the volume
  in 24 shells (what blur removes and grids add), a view the hand-made
  features see only through gradient statistics;
* a dipy_ext model file (VQVAE3D or LatentDiffusion3D ``.npz``): the
  pre-quantisation VQ-VAE encoder output, pooled (per-channel mean and
  standard deviation, plus a 2^3 spatial average).

Every report names the extractor it used (:attr:`FeatureExtractor.name`).
"""

from pathlib import Path

import numpy as np
from scipy import ndimage


def stats_features(volume):
    """Hand-made intensity / texture / shape features of one volume in [0, 1]."""
    v = np.asarray(volume, dtype=np.float64)
    brain = v > 0.02
    values = v[brain] if brain.any() else v.ravel()
    hist, _ = np.histogram(values, bins=16, range=(0, 1))
    hist = hist / max(len(values), 1)
    pct = np.percentile(values, [5, 25, 50, 75, 95])
    grad = np.sqrt(sum(g**2 for g in np.gradient(v)))
    g_brain = grad[brain] if brain.any() else grad.ravel()
    lap = ndimage.laplace(v)
    com = (
        np.asarray(ndimage.center_of_mass(brain)) / np.asarray(v.shape)
        if brain.any()
        else np.zeros(3)
    )
    thumb = _pool(v, 4)
    return np.concatenate(
        [
            hist,
            pct,
            [values.mean(), values.std(), brain.mean()],
            [
                g_brain.mean(),
                g_brain.std(),
                np.abs(lap[brain]).mean() if brain.any() else 0.0,
            ],
            com,
            thumb.ravel(),
        ]
    )


def spectrum_features(volume, *, shells=24):
    """log10 radial power spectrum of one volume in ``shells`` shells."""
    from dipy_ext.metrics.spectrum import radial_power_spectrum

    v = np.asarray(volume, dtype=np.float64)
    # shells of equal width from 0 to the corner of the spectrum
    _, power = radial_power_spectrum(v, bin_width=np.sqrt(3) / 2 / (shells - 0.5))
    return np.log10(np.maximum(power, 1e-30))


def _pool(v, n):
    """Average-pool a 3D array to about ``n`` cells per axis."""
    zoom = [n / s for s in v.shape]
    return ndimage.zoom(
        ndimage.uniform_filter(v, [max(1, s // n) for s in v.shape]), zoom, order=1
    )


class FeatureExtractor:
    """A named callable turning a batch of volumes into an (N, F) array."""

    def __init__(self, function, name, *, batched=False):
        self.function = function
        self.name = name
        self.batched = batched

    def __call__(self, volumes):
        volumes = np.asarray(volumes, dtype=np.float32)
        if volumes.ndim == 3:
            volumes = volumes[None]
        if self.batched:
            feats = np.asarray(self.function(volumes), dtype=np.float64)
        else:
            feats = np.stack([np.ravel(self.function(v)) for v in volumes])
        return feats.reshape(len(volumes), -1)


def vqvae_features(vqvae):
    """Pooled pre-quantisation encoder features of a VQVAE3D (batched)."""

    def extract(volumes):
        z = np.asarray(
            vqvae.encoder.predict(volumes[..., None], batch_size=2, verbose=0)
        )
        axes = (1, 2, 3)
        coarse = np.stack(
            [_pool(zi[..., c], 2) for zi in z for c in range(z.shape[-1])]
        )
        coarse = coarse.reshape(len(z), -1)
        return np.concatenate([z.mean(axis=axes), z.std(axis=axes), coarse], axis=1)

    return extract


def get_feature_extractor(spec="stats"):
    """A :class:`FeatureExtractor` from a name, a file path or a callable.

    Parameters
    ----------
    spec : str, Path or callable
        ``"stats"``, ``"spectrum"``; a dipy_ext model file (VQ-VAE
        features); a Keras model file (``.keras`` / ``.h5``, mapping a
        batch ``(N, X, Y, Z, 1)`` to ``(N, F)``); or a callable volume ->
        vector.
    """
    if callable(spec):
        return FeatureExtractor(spec, getattr(spec, "__name__", "custom"))
    if spec == "stats":
        return FeatureExtractor(stats_features, "stats")
    if spec == "spectrum":
        return FeatureExtractor(spectrum_features, "spectrum")
    path = Path(spec)
    if not path.is_file():
        raise ValueError(
            "features should be 'stats', 'spectrum', a model file or a "
            f"callable; '{spec}' is none of these"
        )
    if path.suffix in (".keras", ".h5"):
        import keras

        model = keras.saving.load_model(path, compile=False)
        return FeatureExtractor(
            lambda v: model.predict(v[..., None], verbose=0),
            f"keras:{path.name}",
            batched=True,
        )
    vq = load_vqvae(path)
    return FeatureExtractor(vqvae_features(vq), f"vqvae:{path.name}", batched=True)


def load_vqvae(path):
    """The VQVAE3D of a VQVAE3D or LatentDiffusion3D model file."""
    from dipy_ext.nn.model_file import load_model_file

    try:
        from dipy_ext.nn.vqvae import VQVAE3D

        return VQVAE3D.load(path)
    except ValueError:
        from dipy_ext.nn.diffusion import LatentDiffusion3D

        load_model_file(path, kind="LatentDiffusion3D")  # clear error if neither
        return LatentDiffusion3D.load(path).vqvae
