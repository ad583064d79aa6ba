"""One self-describing file per model: JSON metadata + weight arrays (.npz).

The metadata hold the format version, the model kind, its architecture
config, the preprocessing grid and anything else the model needs (a latent
scale factor, a noise schedule). Weights are stored per group (``vqvae``,
``unet``, ...) in the order Keras lists them for that architecture, which the
config fully determines; shapes are checked on load. An ``.npz`` archive is
read without pickle, by numpy alone, on any Keras backend.
"""

import json
from pathlib import Path
import zipfile
import zlib

import numpy as np

from dipy_ext._files import atomic_path

FORMAT_VERSION = 1
_META = "__meta__"


def save_model_file(path, *, kind, meta, weights, half_precision=False):
    """Write a model file atomically (temporary file, then rename).

    Parameters
    ----------
    path : str or Path
        Destination (any suffix; ``.npz`` is customary).
    kind : str
        Model class name, checked on load.
    meta : dict
        JSON-serialisable metadata.
    weights : dict of str -> list of ndarray
        Weight arrays per group, in ``model.weights`` order.
    half_precision : bool, optional
        Store float32 weights as float16 (half the size; loaded back as
        float32, outputs then differ from the original at the 1e-3 level).
    """
    path = Path(path)
    payload = {
        _META: np.frombuffer(
            json.dumps(
                {"format_version": FORMAT_VERSION, "kind": kind, **meta}
            ).encode(),
            dtype=np.uint8,
        )
    }
    for group, arrays in weights.items():
        for i, array in enumerate(arrays):
            array = np.asarray(array)
            if half_precision and array.dtype == np.float32 and _fits_half(array):
                array = array.astype(np.float16)
            payload[f"{group}/{i:04d}"] = array
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **payload)
    return path


def _fits_half(array):
    """Whether float16 holds every value (a counter, such as a quantizer's
    code usage, can pass 65504 and would become inf: it stays float32)."""
    return not array.size or np.abs(array).max() <= np.finfo(np.float16).max


def load_model_file(path, *, kind):
    """Read a model file; return ``(meta, weights)`` as given to the writer.

    Raises
    ------
    ValueError
        Missing or unreadable file, not a dipy_ext model, a newer format, or
        a model of another kind.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"'{path}' is a folder; expected a dipy_ext model file (.npz)")
    if not path.is_file():
        raise ValueError(f"model file '{path}' does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"'{path}' is not a dipy_ext model file (expected the .npz archive "
            "that a model's save() writes)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            if _META not in data.files:
                raise ValueError("no metadata")
            meta = json.loads(data[_META].tobytes().decode())
            groups = {}
            for name in sorted(n for n in data.files if n != _META):
                group = name.rsplit("/", 1)[0]
                groups.setdefault(group, []).append(data[name])
    except (
        OSError,
        ValueError,
        KeyError,
        zipfile.BadZipFile,
        EOFError,
        zlib.error,
    ) as e:
        raise ValueError(f"'{path}' is not a readable dipy_ext model file ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(
            f"'{path}' is not a readable dipy_ext model file (bad metadata)"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"'{path}' has model format version {version}; this dipy_ext reads "
            f"versions up to {FORMAT_VERSION}: upgrade dipy_ext"
        )
    if meta.get("kind") != kind:
        raise ValueError(f"'{path}' holds a {meta.get('kind')} model, expected {kind}")
    return meta, groups


def model_weights(model):
    """A Keras model's weights as numpy arrays, in ``model.weights`` order."""
    return [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in model.weights]


def assign_weights(model, arrays, *, source):
    """Set a Keras model's weights, checking count and shapes.

    Raises ``ValueError("... do not match the declared model")`` on mismatch,
    as DIPY's model classes do.
    """
    variables = model.weights
    if len(arrays) != len(variables):
        raise ValueError(
            f"weights in {source} do not match the declared model: "
            f"{len(arrays)} arrays for {len(variables)} variables"
        )
    for var, array in zip(variables, arrays):
        if tuple(var.shape) != tuple(array.shape):
            raise ValueError(
                f"weights in {source} do not match the declared model: "
                f"{var.path} has shape {tuple(var.shape)}, file has {array.shape}"
            )
    for var, array in zip(variables, arrays):
        var.assign(np.asarray(array).astype(var.dtype))


class SavedModel:
    """``save`` / ``load`` of a model class through one model file.

    A class gives ``_file_contents()`` -> ``(meta, weights)`` and the
    classmethod ``_from_meta(meta, weights, *, source, mixed_precision,
    verbose)``; its class name is the file's ``kind``.
    """

    def save(self, path, *, half_precision=False):
        """Write the model (its config, grid, weights and, for a diffusion
        model, schedule, latent scaling, conditions' statistics and
        recommended sampling settings) to one file.

        Parameters
        ----------
        path : str or Path
            The file (``.npz``); written through a temporary name, so a
            crash never leaves half a file.
        half_precision : bool, optional
            Store the weights as float16 (half the size).

        Returns
        -------
        path : Path

        Raises
        ------
        ValueError
            The model is not trained yet (a diffusion model).
        OSError
            The file cannot be written (nothing is left behind).
        """
        meta, weights = self._file_contents()
        return save_model_file(
            path,
            kind=type(self).__name__,
            meta=meta,
            weights=weights,
            half_precision=half_precision,
        )

    @classmethod
    def load(cls, path, *, mixed_precision=False, verbose=True):
        """Read a model written by :meth:`save`.

        Parameters
        ----------
        path : str or Path
        mixed_precision : bool, optional
            Compute in bfloat16.
        verbose : bool, optional
            Training progress of a later ``fit``.

        Returns
        -------
        model : an instance of this class

        Raises
        ------
        ValueError
            A missing, corrupt or foreign file, a newer format, or weights
            that do not match the declared architecture.
        """
        meta, weights = load_model_file(path, kind=cls.__name__)
        return cls._from_meta(
            meta,
            weights,
            source=f"'{path}'",
            mixed_precision=mixed_precision,
            verbose=verbose,
        )
