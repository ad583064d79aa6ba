"""Metrics for synthetic MRI: image similarity, anatomy and artefacts
(tissue Dice, spectral spikes, spectrum distance), set distances,
memorisation."""

from dipy_ext.metrics.features import get_feature_extractor, stats_features
from dipy_ext.metrics.image import ms_ssim, ms_ssim_levels, psnr, ssim
from dipy_ext.metrics.report import evaluate_synthesis
from dipy_ext.metrics.sets import (
    classifier_two_sample_test,
    diversity,
    frechet_distance,
    memorization,
    mmd,
    prdc,
    volume_distances,
)
from dipy_ext.metrics.sharpness import (
    reconstruction_report,
    sharpness,
    sharpness_ratio,
)
from dipy_ext.metrics.spectrum import (
    mean_tissue_dice,
    radial_power_spectrum,
    spectral_spike,
    spectral_spikes,
    spectrum_distance,
    tissue_dice,
)
from dipy_ext.metrics.tissue import tissue_distribution_distance, tissue_fractions

__all__ = [
    "classifier_two_sample_test",
    "diversity",
    "evaluate_synthesis",
    "frechet_distance",
    "get_feature_extractor",
    "mean_tissue_dice",
    "memorization",
    "mmd",
    "ms_ssim",
    "ms_ssim_levels",
    "prdc",
    "psnr",
    "radial_power_spectrum",
    "reconstruction_report",
    "sharpness",
    "sharpness_ratio",
    "spectral_spike",
    "spectral_spikes",
    "spectrum_distance",
    "ssim",
    "stats_features",
    "tissue_dice",
    "tissue_distribution_distance",
    "tissue_fractions",
    "volume_distances",
]
