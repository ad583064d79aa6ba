"""The default model shipped inside the package."""

from pathlib import Path

DEFAULT_MODEL_FOLDER = Path(__file__).parent / "default_model"
DEFAULT_MODEL_NAME = "dipy_ext_default_ldm.npz"


def default_model_path():
    """Path of the embedded default LatentDiffusion3D model file.

    Raises ``FileNotFoundError`` if this installation lacks it.
    """
    path = DEFAULT_MODEL_FOLDER / DEFAULT_MODEL_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"the default model {path} is missing from this installation; "
            "reinstall dipy_ext or pass --model_file"
        )
    return path
