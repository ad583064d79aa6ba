"""Metrics for synthetic MRI: image similarity, set distances, memorisation."""

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
from dipy_ext.metrics.tissue import tissue_distribution_distance, tissue_fractions

__all__ = [
    "classifier_two_sample_test",
    "diversity",
    "evaluate_synthesis",
    "frechet_distance",
    "get_feature_extractor",
    "memorization",
    "mmd",
    "ms_ssim",
    "ms_ssim_levels",
    "prdc",
    "psnr",
    "reconstruction_report",
    "sharpness",
    "sharpness_ratio",
    "ssim",
    "stats_features",
    "tissue_distribution_distance",
    "tissue_fractions",
    "volume_distances",
]
