"""The models: ``from dipy_ext.nn import VQVAE3D, LatentDiffusion3D``.

The classes are imported on first use, so ``import dipy_ext.nn`` stays cheap
and Keras (with its backend) is loaded only when a model is needed.
"""

_LAZY = {
    "VQVAE3D": "dipy_ext.nn.vqvae",
    "LatentDiffusion3D": "dipy_ext.nn.diffusion",
    "PatchDiscriminator3D": "dipy_ext.nn.discriminator",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'dipy_ext.nn' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__():
    return __all__
