"""Import Keras 3 once, with a clear error when it or its backend is missing.

Model code uses ``keras.layers`` and ``keras.ops`` only, so it runs on any
Keras backend (``KERAS_BACKEND=tensorflow``, the default, or ``jax``/``torch``).
"""

import os

# TensorFlow's C++ start-up chatter hides our own messages on the command line.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_INSTALL_HINT = (
    "dipy_ext models need Keras 3 and a backend: install TensorFlow with "
    "pip install 'dipy_ext[cpu]' (or 'dipy_ext[gpu]' on a CUDA machine)"
)

try:
    import keras
except ImportError as e:  # keras itself, or its default TensorFlow backend
    raise ImportError(f"{_INSTALL_HINT} ({e})") from e

if int(keras.__version__.split(".")[0]) < 3:
    raise ImportError(f"{_INSTALL_HINT}; found Keras {keras.__version__}")

from keras import layers, ops  # noqa: E402

__all__ = ["keras", "layers", "ops", "dtype_policy"]


def dtype_policy(mixed_precision):
    """Keras dtype policy name: bfloat16 compute with float32 weights, or float32."""
    return "mixed_bfloat16" if mixed_precision else "float32"
