"""What a latent diffusion model needs of its autoencoder (the first stage).

:class:`~dipy_ext.nn.diffusion.LatentDiffusion3D` uses its autoencoder
through this interface and nothing else, so any first stage (the
:class:`~dipy_ext.nn.vqvae.VQVAE3D`, a KL autoencoder, another quantizer)
can stand in by providing:

Attributes
    ``input_shape`` (the model grid, 3 ints), ``affine`` (4x4, voxel to
    world mm), ``space`` (None or "MNI"), ``latent_shape`` (3 ints) and
    ``embedding_dim`` (latent channels).
``encode(volumes, *, batch_size)``
    ``(N, X, Y, Z)`` volumes in [0, 1] -> ``(N, x, y, z, C)`` latents.
``decode(latents, *, batch_size)``
    Latents -> ``(N, X, Y, Z)`` volumes (snapped to codes first, where the
    first stage has codes).
``file_part()``
    ``(meta, weights)``: a JSON-serialisable dict and a list of arrays, its
    part of the diffusion model's file.
``from_file_part(meta, weights, *, source, mixed_precision)`` (classmethod)
    The first stage rebuilt from that part.

and registering its class with :func:`register_first_stage`, so the
diffusion model's file can name it.
"""

FIRST_STAGES = {}
ATTRIBUTES = ("input_shape", "affine", "latent_shape", "embedding_dim")
METHODS = ("encode", "decode", "file_part", "from_file_part")


def register_first_stage(cls):
    """Class decorator: model files name the class by its ``__name__``."""
    FIRST_STAGES[cls.__name__] = cls
    return cls


def check_first_stage(model):
    """``model`` if it offers the interface (and is registered), else a
    one-line ``ValueError`` naming what is missing."""
    missing = [n for n in ATTRIBUTES + METHODS if not hasattr(model, n)]
    if missing:
        raise ValueError(
            f"the autoencoder should offer {', '.join(ATTRIBUTES + METHODS)}; "
            f"{type(model).__name__} lacks {', '.join(missing)}"
        )
    if type(model).__name__ not in FIRST_STAGES:
        raise ValueError(
            f"register {type(model).__name__} with "
            "dipy_ext.nn.first_stage.register_first_stage so model files can name it"
        )
    return model


def first_stage_class(kind, source):
    """The registered class of a model file's first stage."""
    if kind not in FIRST_STAGES:
        raise ValueError(
            f"{source} needs the first stage {kind!r}, which is not registered "
            f"(known: {', '.join(sorted(FIRST_STAGES))})"
        )
    return FIRST_STAGES[kind]
