"""Import Keras 3 once, with a clear error when it or its backend is missing.

Model code uses ``keras.layers`` and ``keras.ops`` only, so it runs on any
Keras backend (``KERAS_BACKEND=tensorflow``, the default, or ``jax``/``torch``).
"""

import contextlib
import os
import sys
import tempfile
import warnings

# TensorFlow's C++ chatter hides our own messages on the command line: at
# level 2 it still logs, as an error, that oneDNN falls back to Eigen for
# int32 on CPUs without AVX-512 (a notice). Errors that matter reach Python
# as exceptions; TF_CPP_MIN_LOG_LEVEL=0 brings every line back.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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

# lines TensorFlow's native libraries print while they load, before its
# logging starts (so TF_CPP_MIN_LOG_LEVEL cannot hold them back): notices,
# twice per process, that would open every command's output
_STARTUP_NOISE = (
    "WARNING: All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
)


@contextlib.contextmanager
def _startup_notices_dropped():
    """Hold back the native start-up notices printed on the stderr file
    descriptor during the block; every other line is written out after."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr descriptor: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            text = caught.read().decode(errors="replace")
            kept = [
                line
                for line in text.splitlines()
                if not any(noise in line for noise in _STARTUP_NOISE)
            ]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


try:
    with _startup_notices_dropped():
        import keras
except ImportError as e:  # keras itself, or its default TensorFlow backend
    raise ImportError(f"{_INSTALL_HINT} ({e})") from e

if int(keras.__version__.split(".")[0]) < 3:
    raise ImportError(f"{_INSTALL_HINT}; found Keras {keras.__version__}")

import random  # noqa: E402

from keras import layers, ops  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["keras", "layers", "ops", "dtype_policy", "seeded"]


@contextlib.contextmanager
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
