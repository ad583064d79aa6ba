"""The public API: cheap imports, no global side effects, DIPY compatibility."""

import subprocess
import sys

import pytest


def _run(code):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_nn_imports_models_lazily():
    out = _run(
        "import sys, dipy_ext, dipy_ext.nn; print('keras' in sys.modules); "
        "from dipy_ext.nn import VQVAE3D, LatentDiffusion3D; "
        "print(VQVAE3D.__module__, LatentDiffusion3D.__module__)"
    )
    assert out.splitlines() == ["False", "dipy_ext.nn.vqvae dipy_ext.nn.diffusion"]


def test_viz_leaves_matplotlib_backend_alone():
    out = _run(
        "import matplotlib; matplotlib.use('svg'); import numpy as np, tempfile, os; "
        "from dipy_ext.viz import mosaic; "
        "p = os.path.join(tempfile.mkdtemp(), 'm.png'); "
        "mosaic([np.random.rand(8, 8, 8)], p); "
        "print(matplotlib.get_backend(), os.path.getsize(p) > 0)"
    )
    assert out == "svg True"


def test_fetcher_error_is_dipys():
    from dipy.data.fetcher import FetcherError as DipyFetcherError

    from dipy_ext.data.fetcher import FetcherError

    assert issubclass(FetcherError, DipyFetcherError)


def test_version_names_dipy_ext(monkeypatch, capsys):
    from dipy_ext import __version__
    from dipy_ext.workflows import cli

    monkeypatch.setattr("sys.argv", ["dipy_synthesize_brain", "--version"])
    cli.run()
    assert capsys.readouterr().out.startswith(
        f"dipy_synthesize_brain (dipy_ext {__version__}, DIPY "
    )


@pytest.mark.slow
def test_constructors_leave_global_generators_alone():
    import random

    import numpy as np

    from dipy_ext.nn.vqvae import VQVAE3D

    kw = {
        "input_shape": (16, 16, 16),
        "channels": (8, 16),
        "quantizer": "vq",
        "output_stage": "subpixel",
        "num_embeddings": 16,
        "embedding_dim": 4,
        "seed": 3,
        "verbose": False,
    }
    np.random.seed(5)  # noqa: NPY002 - the global state is what is checked
    random.seed(5)
    expected = (np.random.rand(), random.random())  # noqa: NPY002
    np.random.seed(5)  # noqa: NPY002
    random.seed(5)
    first = VQVAE3D(**kw)
    assert (np.random.rand(), random.random()) == expected  # noqa: NPY002
    again = VQVAE3D(**kw)  # and the seed still makes the same weights
    for a, b in zip(first.network.get_weights(), again.network.get_weights()):
        np.testing.assert_array_equal(a, b)
    # ... and the same training, whatever the global generators hold
    from dipy_ext.data import phantom_cohort

    volumes = phantom_cohort(4, (16, 16, 16), rng=0)
    for model in (first, again):
        random.seed(None)
        np.random.seed(None)  # noqa: NPY002
        model.fit(volumes, epochs=2, batch_size=2, flip_augment=True)
    for a, b in zip(first.network.get_weights(), again.network.get_weights()):
        np.testing.assert_array_equal(a, b)
