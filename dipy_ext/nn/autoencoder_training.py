"""How VQVAE3D trains: reconstruction + structure + adversarial losses.

:class:`AutoencoderTrainer` wraps the VQ-VAE network (and, for adversarial
training, a :class:`~dipy_ext.nn.discriminator.PatchDiscriminator3D`) in a
Keras model whose ``compute_loss`` holds every term, so Keras' own
``train_step`` trains it on TensorFlow, JAX and PyTorch alike, under
tf.distribute or keras.distribution, with no backend-specific code:

* the generator's adversarial term is computed through the discriminator
  with its weights behind ``stop_gradient`` (a stateless call), so it moves
  the autoencoder only;
* the discriminator's term sees the reconstruction behind
  ``stop_gradient``, so it moves the discriminator only.

One backward pass then gives each network the gradient of its own loss.
Adam keeps its moments per weight, so one Adam over both weight sets makes
exactly the updates of two Adams with the same learning-rate schedule. Both
terms are switched on at ``adversarial_start`` steps (reconstruction-only
warm-up before). The discriminator is a sub-model of the trainer, so
BackupAndRestore checkpoints (and resumes) it, while the model file of the
VQ-VAE never holds it.
"""

from dipy_ext.nn._backend import keras, ops
from dipy_ext.nn.discriminator import PatchDiscriminator3D, adversarial_losses
from dipy_ext.nn.distribute import BuiltBeforeFit, per_replica_loss
from dipy_ext.nn.losses import STRUCTURE_LOSSES, reconstruction_loss


class AutoencoderTrainer(BuiltBeforeFit, keras.Model):
    """Keras model that trains ``network`` with every loss of ``VQVAE3D.fit``.

    Parameters
    ----------
    network : keras.Model
        Volumes ``(N, X, Y, Z, 1)`` -> reconstructions; its own losses
        (the quantizer's commitment loss) are added.
    reconstruction : callable
        Per-sample reconstruction loss ``f(target, prediction)``.
    structure_losses : dict of str -> float
        Weights of the :data:`~dipy_ext.nn.losses.STRUCTURE_LOSSES` to add.
    adversarial_weight : float
        Weight of the generator's adversarial term; 0 trains no discriminator.
    adversarial_start : int
        Training steps of reconstruction-only warm-up.
    adversarial_loss : {"hinge", "least_squares", "non_saturating"}
    discriminator_channels : int
        First-layer channels of the PatchDiscriminator3D.
    dtype : str
        Dtype policy of the discriminator.
    """

    def __init__(
        self,
        network,
        *,
        reconstruction,
        structure_losses=None,
        adversarial_weight=0.0,
        adversarial_start=0,
        adversarial_loss="hinge",
        discriminator_channels=32,
        dtype=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.network = network
        self.reconstruction = reconstruction
        self.structure_losses = dict(structure_losses or {})
        self.adversarial_weight = float(adversarial_weight)
        self.adversarial_start = int(adversarial_start)
        self.discriminator = None
        self.trackers = [keras.metrics.Mean(name="l1")]
        self.trackers += [keras.metrics.Mean(name=n) for n in self.structure_losses]
        if self.adversarial_weight > 0:
            self.disc_loss_fn, self.gen_loss_fn = adversarial_losses(adversarial_loss)
            self.discriminator = PatchDiscriminator3D(
                channels=discriminator_channels, dtype=dtype, name="discriminator"
            )
            self.trackers += [
                keras.metrics.Mean(name=n)
                for n in (
                    "generator_adversarial",
                    "discriminator_loss",
                    "disc_accuracy",
                )
            ]
        # optimizer steps taken, for the warm-up (a variable, so it is
        # checkpointed and read correctly inside compiled steps on any backend)
        self.step = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            name="step",
            aggregation="only_first_replica",
        )

    def build_for(self, patch_shape):
        """Create every weight (the discriminator's too) before fit/restore."""
        x = ops.zeros((1, *patch_shape, 1))
        if self.discriminator is not None:
            self.discriminator(x)
        self.network(x)
        self.built = True

    def call(self, x, training=False):
        return self.network(x, training=training)

    def _track(self, name, value):
        for t in self.trackers:
            if t.name == name:
                t.update_state(value)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        target = ops.cast(y, "float32")
        pred = ops.cast(y_pred, "float32")
        total = ops.mean(self.reconstruction(target, pred))
        self._track("l1", ops.mean(ops.abs(target - pred)))
        for name, weight in self.structure_losses.items():
            term = ops.mean(STRUCTURE_LOSSES[name](target, pred))
            self._track(name, term)
            total = total + weight * term
        for loss in self.losses:  # the quantizer's commitment loss
            total = total + ops.cast(ops.sum(loss), "float32")
        if self.discriminator is not None:
            total = total + self._adversarial(target, pred)
        if training:
            self.step.assign_add(ops.ones((), self.step.dtype))
        return per_replica_loss(total)

    def generator_term(self, pred):
        """Adversarial loss of the autoencoder, the discriminator held fixed.

        The discriminator's weights go in behind ``stop_gradient`` (a
        stateless call), so this term moves the autoencoder only.
        """
        disc = self.discriminator
        frozen = [ops.stop_gradient(v) for v in disc.trainable_variables]
        fake, _ = disc.stateless_call(frozen, disc.non_trainable_variables, pred)
        return self.gen_loss_fn(fake)

    def _adversarial(self, target, pred):
        disc = self.discriminator
        on = ops.cast(self.step >= self.adversarial_start, "float32")
        generator_term = self.generator_term(pred)
        real = ops.cast(disc(target), "float32")
        fake = ops.cast(disc(ops.stop_gradient(pred)), "float32")
        disc_term = self.disc_loss_fn(real, fake)
        self._track("generator_adversarial", generator_term)
        self._track("discriminator_loss", disc_term)
        accuracy = 0.5 * (
            ops.mean(ops.cast(real > 0, "float32"))
            + ops.mean(ops.cast(fake < 0, "float32"))
        )
        self._track("disc_accuracy", accuracy)
        return on * (self.adversarial_weight * generator_term + disc_term)


def make_trainer(
    network,
    *,
    loss,
    background_weight,
    structure_losses,
    adversarial_weight,
    adversarial_start,
    adversarial_loss,
    discriminator_channels,
    dtype,
):
    """An :class:`AutoencoderTrainer` with the reconstruction loss by name."""
    return AutoencoderTrainer(
        network,
        reconstruction=reconstruction_loss(loss, background_weight),
        structure_losses=structure_losses,
        adversarial_weight=adversarial_weight,
        adversarial_start=adversarial_start,
        adversarial_loss=adversarial_loss,
        discriminator_channels=discriminator_channels,
        dtype=dtype,
    )
