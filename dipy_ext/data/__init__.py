"""Data: NIfTI loading, the NFBS fetcher, synthetic phantoms, default model."""

from dipy_ext.data.fetcher import FetcherError, fetch_nfbs, read_nfbs
from dipy_ext.data.io import (
    find_nifti_files,
    load_cohort_cache,
    load_volume,
    load_volumes,
    preprocess_cohort,
)
from dipy_ext.data.phantoms import (
    phantom_cohort,
    phantom_family,
    synthetic_brain_phantom,
    ventricle_fraction,
)

__all__ = [
    "FetcherError",
    "fetch_nfbs",
    "find_nifti_files",
    "load_cohort_cache",
    "load_volume",
    "load_volumes",
    "phantom_cohort",
    "phantom_family",
    "preprocess_cohort",
    "read_nfbs",
    "synthetic_brain_phantom",
    "ventricle_fraction",
]
