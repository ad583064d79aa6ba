"""UNet3D: the denoiser of the latent diffusion model.

A 3D UNet on channels-last latents: per level ``num_res_blocks`` residual
blocks that each receive the timestep embedding (sinusoidal + MLP), optional
self-attention at chosen levels, stride-2 downsampling, a middle block
(residual, attention, residual), and a decoder with skip connections and
resize + conv upsampling. An optional condition vector (for example age and
sex) is embedded and added to the timestep embedding; a learned "null"
embedding replaces it for samples whose condition is dropped, which is what
classifier-free guidance needs.

Inputs: ``[x_t, t]`` or, with conditions, ``[x_t, t, condition, drop]`` where
``t`` is a float timestep per sample and ``drop`` a 0/1 flag per sample.
"""

from dipy_ext.nn._backend import keras, layers, ops
from dipy_ext.nn.layers import (
    Attention3D,
    ResBlock3D,
    TimestepEmbedding,
    Upsample3D,
    downsample,
    group_norm,
)


class ConditionEmbedding(layers.Layer):
    """Dense embedding of a condition vector, or a learned null embedding."""

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.dense = layers.Dense(dim, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.dense.build(input_shape[0])
        self.null = self.add_weight(shape=(self.dim,), initializer="zeros", name="null")

    def call(self, inputs):
        condition, drop = inputs
        emb = self.dense(condition)
        drop = ops.cast(ops.reshape(drop, (-1, 1)), emb.dtype)
        null = ops.cast(self.null, emb.dtype)[None, :]
        return emb * (1 - drop) + null * drop

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


def _check_levels(latent_shape, levels, attention_levels):
    if len(attention_levels) != levels:
        raise ValueError(
            f"attention_levels should have {levels} entries (one per level), "
            f"got {len(attention_levels)}"
        )
    factor = 2 ** (levels - 1)
    if any(s % factor for s in latent_shape):
        raise ValueError(
            f"latent grid {tuple(latent_shape)} should be divisible by {factor} "
            f"for {levels} UNet levels"
        )


def _inputs_and_embedding(latent_shape, latent_channels, dim, condition_dim, dtype):
    """The network's inputs (the noisy latent, the timestep, and for a
    conditional network the condition and its dropout flag) and the
    embedding every residual block receives."""
    x_in = keras.Input((*latent_shape, latent_channels), name="x_t")
    t_in = keras.Input((), name="timestep")
    inputs = [x_in, t_in]
    temb = TimestepEmbedding(dim, dtype=dtype)(t_in)
    if condition_dim:
        c_in = keras.Input((condition_dim,), name="condition")
        drop_in = keras.Input((), name="drop_condition")
        inputs += [c_in, drop_in]
        temb = layers.Add(dtype=dtype)(
            [temb, ConditionEmbedding(dim, dtype=dtype)([c_in, drop_in])]
        )
    return inputs, temb


def build_unet(
    latent_shape,
    latent_channels,
    *,
    channels=(64, 128, 256),
    num_res_blocks=2,
    attention_levels=(False, True, True),
    num_heads=1,
    groups=8,
    condition_dim=0,
    dtype="float32",
):
    """Functional UNet3D predicting a tensor shaped like its input latent.

    Raises ``ValueError`` when the latent grid cannot be halved
    ``len(channels) - 1`` times or ``attention_levels`` has the wrong length.
    """
    levels = len(channels)
    _check_levels(latent_shape, levels, attention_levels)
    kw = {"groups": groups, "time_embedding": True, "dtype": dtype}
    inputs, temb = _inputs_and_embedding(
        latent_shape, latent_channels, 4 * channels[0], condition_dim, dtype
    )
    x_in = inputs[0]

    h = layers.Conv3D(channels[0], 3, padding="same", dtype=dtype)(x_in)
    skips = [h]
    for level, ch in enumerate(channels):
        for _ in range(num_res_blocks):
            h = ResBlock3D(ch, **kw)([h, temb])
            if attention_levels[level]:
                h = Attention3D(num_heads=num_heads, groups=groups, dtype=dtype)(h)
            skips.append(h)
        if level < levels - 1:
            h = downsample(ch, dtype=dtype)(h)
            skips.append(h)

    h = ResBlock3D(channels[-1], **kw)([h, temb])
    h = Attention3D(num_heads=num_heads, groups=groups, dtype=dtype)(h)
    h = ResBlock3D(channels[-1], **kw)([h, temb])

    for level in reversed(range(levels)):
        for _ in range(num_res_blocks + 1):
            h = layers.Concatenate(dtype=dtype)([h, skips.pop()])
            h = ResBlock3D(channels[level], **kw)([h, temb])
            if attention_levels[level]:
                h = Attention3D(num_heads=num_heads, groups=groups, dtype=dtype)(h)
        if level > 0:
            h = Upsample3D(channels[level], dtype=dtype)(h)

    h = group_norm(channels[0], groups, dtype=dtype)(h)
    h = layers.Activation("silu", dtype=dtype)(h)
    out = layers.Conv3D(
        latent_channels,
        3,
        padding="same",
        kernel_initializer="zeros",
        dtype="float32",
        name="prediction",
    )(h)
    return keras.Model(inputs, out, name="unet3d")
