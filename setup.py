"""Installation of dipy_ext.

TensorFlow is chosen through an extra because pip cannot pick the right wheel
for a machine by itself:

* ``pip install "dipy_ext[cpu]"``: ``tensorflow-cpu`` (about 270 MB) on Linux
  x86-64 and Windows, where it exists; ``tensorflow`` elsewhere (macOS).
  No CUDA library is downloaded.
* ``pip install "dipy_ext[gpu]"``: ``tensorflow[and-cuda]``, which brings the
  CUDA and cuDNN wheels a Linux NVIDIA GPU needs.

A bare ``pip install dipy_ext`` installs everything except TensorFlow; the
models then raise an error that names these two commands.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
TF_MIN = "2.16"  # first TensorFlow release that ships Keras 3

version = {}
exec((HERE / "dipy_ext" / "_version.py").read_text(), version)

setup(
    name="dipy_ext",
    version=version["__version__"],
    description="Synthetic 3D brain MRI with a VQ-VAE and latent diffusion, "
    "in the style of DIPY",
    long_description=(HERE / "README.rst").read_text(),
    long_description_content_type="text/x-rst",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["dipy_ext", "dipy_ext.*"]),
    package_data={"dipy_ext.data": ["default_model/*"]},
    include_package_data=True,
    install_requires=[
        "dipy>=1.10",
        "numpy>=1.26",
        "scipy>=1.11",
        "nibabel>=5.0",
        "keras>=3.3",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
        "tqdm>=4.60",
    ],
    extras_require={
        "cpu": [
            f"tensorflow-cpu>={TF_MIN}; "
            "sys_platform == 'linux' and platform_machine == 'x86_64'",
            f"tensorflow>={TF_MIN}; "
            "sys_platform != 'linux' or platform_machine != 'x86_64'",
        ],
        "gpu": [f"tensorflow[and-cuda]>={TF_MIN}"],
        "test": ["pytest>=7", "scikit-image>=0.21", "nilearn>=0.10", "jax>=0.4.30"],
        # the other Keras backends the model code runs on (PyPI's Linux
        # PyTorch wheel brings GBs of CUDA: the test extra has JAX only, and
        # the README's test command adds PyTorch's CPU build)
        "backends": ["jax>=0.4.30", "torch>=2.1"],
        "doc": ["sphinx>=7", "sphinx-gallery>=0.15", "nilearn>=0.10"],
        "default-model": ["nilearn>=0.10"],
    },
    entry_points={
        "console_scripts": [
            "dipy_synthesize_brain = dipy_ext.workflows.cli:run",
            "dipy_train_vqvae3d = dipy_ext.workflows.cli:run",
            "dipy_train_latent_diffusion3d = dipy_ext.workflows.cli:run",
            "dipy_evaluate_synthesis = dipy_ext.workflows.cli:run",
            "dipy_fetch_nfbs = dipy_ext.workflows.cli:run",
        ]
    },
)
