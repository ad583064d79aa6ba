"""dipy_ext: synthetic 3D brain MRI with a VQ-VAE and latent diffusion.

Importing this package is cheap: the models live in :mod:`dipy_ext.nn`, which
imports Keras (and its TensorFlow backend) only when it is imported itself.
"""

from dipy_ext._version import __version__

__all__ = ["__version__"]
