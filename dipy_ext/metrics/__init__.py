"""Metrics for synthetic MRI: image similarity, set distances, memorisation."""

from dipy_ext.metrics.image import ms_ssim, ms_ssim_levels, psnr, ssim

__all__ = ["ms_ssim", "ms_ssim_levels", "psnr", "ssim"]
