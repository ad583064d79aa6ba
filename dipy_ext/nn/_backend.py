"""Import Keras 3 once, with a clear error when it or its backend is missing.

Model code uses ``keras.layers`` and ``keras.ops`` only, so it runs on any
Keras backend (``KERAS_BACKEND=tensorflow``, the default, or ``jax``/``torch``).
"""

import os
import sys
import warnings

# TensorFlow's C++ start-up chatter hides our own messages on the command line.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512
# VNNI/BF16 or AMX; elsewhere (AVX2 machines, AMD EPYC) 3D convolutions fall
# back to Eigen kernels that train 5-6x slower (measured: Conv3D 64^3 x 16
# forward+backward 1.26 s -> 0.22 s on a 2-core AMD EPYC). Takes effect only
# if TensorFlow is not imported yet; TF_ENABLE_ONEDNN_OPTS=0 opts out.
if "TF_ENABLE_ONEDNN_OPTS" not in os.environ and "tensorflow" in sys.modules:
    warnings.warn(
        "TensorFlow was imported before dipy_ext, so dipy_ext could not turn on "
        "its oneDNN kernels (3D convolutions train about 5x slower on CPUs "
        "without AVX-512): import dipy_ext first or set TF_ENABLE_ONEDNN_OPTS=1",
        stacklevel=2,
    )
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

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

from contextlib import contextmanager  # noqa: E402
import random  # noqa: E402

from keras import layers, ops  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["keras", "layers", "ops", "dtype_policy", "seeded"]


@contextmanager
def seeded(seed):
    """Seed Keras' global generator (weight initialisers draw from it) for
    a model's construction, leaving Python's and numpy's global generators
    as they were. ``None`` seeds nothing."""
    if seed is None:
        yield
        return
    python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)  # noqa: NPY002


def dtype_policy(mixed_precision):
    """Keras dtype policy name: bfloat16 compute with float32 weights, or float32."""
    return "mixed_bfloat16" if mixed_precision else "float32"
