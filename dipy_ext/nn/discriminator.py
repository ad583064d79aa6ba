"""PatchDiscriminator3D and the adversarial losses of autoencoder training.

A PatchGAN (Isola et al. 2017) in 3D, as the MONAI brain LDM and CompVis
latent-diffusion autoencoders use: strided convolutions whose output is a
grid of logits, one per overlapping patch (about 22^3 voxels of receptive
field with three layers), so the discriminator judges local texture and
sharpness rather than the whole brain. It is used only while training the
autoencoder and is never stored in the model file used for synthesis.
"""

from dipy_ext.nn._backend import keras, layers, ops
from dipy_ext.nn.layers import group_norm


class PatchDiscriminator3D(keras.Model):
    """Conv(k4, s2) + LeakyReLU, then ``num_layers - 1`` Conv-GroupNorm-LeakyReLU.

    Parameters
    ----------
    channels : int, optional
        Channels of the first layer, doubled at each further layer.
    num_layers : int, optional
        Strided layers (each halves the grid); a stride-1 layer and a
        one-channel logit convolution follow.
    groups : int, optional
        GroupNorm groups (batch statistics would couple the samples of a
        batch and differ between training and evaluation).
    """

    def __init__(self, *, channels=32, num_layers=3, groups=8, dtype=None, **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.channels = channels
        self.num_layers = num_layers
        self.groups = groups
        self.blocks = []
        kw = {"dtype": self.dtype_policy}
        for i in range(num_layers):
            ch = channels * 2**i
            block = [layers.Conv3D(ch, 4, strides=2, padding="same", **kw)]
            if i > 0:
                block.append(group_norm(ch, groups, **kw))
            self.blocks.append(block)
        last = channels * 2 ** (num_layers - 1)
        self.blocks.append(
            [
                layers.Conv3D(last, 4, padding="same", **kw),
                group_norm(last, groups, **kw),
            ]
        )
        self.logits = layers.Conv3D(1, 4, padding="same", dtype="float32")

    def call(self, x, return_features=False):
        """Logits of each patch; with ``return_features`` also the output of
        every block (what feature matching compares)."""
        features = []
        for block in self.blocks:
            for layer in block:
                x = layer(x)
            x = ops.leaky_relu(x, 0.2)
            features.append(x)
        logits = self.logits(x)
        return (logits, features) if return_features else logits

    def get_config(self):
        return {
            "channels": self.channels,
            "num_layers": self.num_layers,
            "groups": self.groups,
        }


def _mean(x):
    return ops.mean(ops.cast(x, "float32"))


# (discriminator loss(real logits, fake logits), generator loss(fake logits))
ADVERSARIAL_LOSSES = {
    # hinge (Lim & Ye 2017; CompVis autoencoders)
    "hinge": (
        lambda real, fake: _mean(ops.relu(1.0 - real)) + _mean(ops.relu(1.0 + fake)),
        lambda fake: -_mean(fake),
    ),
    # least squares (Mao et al. 2017; MONAI's brain LDM)
    "least_squares": (
        lambda real, fake: 0.5 * (_mean((real - 1.0) ** 2) + _mean(fake**2)),
        lambda fake: _mean((fake - 1.0) ** 2),
    ),
    # non-saturating cross-entropy (Goodfellow et al. 2014)
    "non_saturating": (
        lambda real, fake: _mean(ops.softplus(-real)) + _mean(ops.softplus(fake)),
        lambda fake: _mean(ops.softplus(-fake)),
    ),
}


def adversarial_losses(kind):
    """``(discriminator_loss, generator_loss)`` functions of logits."""
    if kind not in ADVERSARIAL_LOSSES:
        raise ValueError(
            f"adversarial_loss should be one of {sorted(ADVERSARIAL_LOSSES)}, "
            f"got {kind!r}"
        )
    return ADVERSARIAL_LOSSES[kind]
