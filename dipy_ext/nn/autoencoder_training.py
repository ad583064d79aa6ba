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

One backward pass then gives each network the gradient of its own loss, and
:class:`~dipy_ext.nn.optimizers.TwoGroupAdam` steps each with its own
learning rate and beta_1 (two Adams in one Keras optimizer). Both terms are
switched on at ``adversarial_start`` steps (reconstruction-only warm-up
before). Discriminator feature matching (L1 between the discriminator's
block outputs on real and reconstructed input, MedicalDiffusion's perceptual
term that needs no pretrained network) is an option. The discriminator is a
sub-model of the trainer, so BackupAndRestore checkpoints (and resumes) it,
while the model file of the VQ-VAE never holds it.
"""

import numpy as np

from dipy_ext.nn._backend import keras, ops, seeded
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
    feature_matching : float
        Weight of discriminator feature matching (0: none).
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
        feature_matching=0.0,
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
        self.feature_matching = float(feature_matching)
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
                    "feature_matching",
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

    def _frozen_discriminator(self, x):
        """(logits, features) with the discriminator's weights behind
        ``stop_gradient`` (a stateless call): moves the autoencoder only."""
        disc = self.discriminator
        frozen = [ops.stop_gradient(v) for v in disc.trainable_variables]
        out, _ = disc.stateless_call(
            frozen, disc.non_trainable_variables, x, return_features=True
        )
        return out

    def generator_term(self, pred):
        """Adversarial loss of the autoencoder, the discriminator held fixed."""
        fake, _ = self._frozen_discriminator(pred)
        return self.gen_loss_fn(fake)

    def feature_matching_term(self, target, pred):
        """Mean L1 between the fixed discriminator's block outputs on real
        and reconstructed input (a perceptual loss with no pretrained net)."""
        _, real_features = self._frozen_discriminator(target)
        fake_logits, fake_features = self._frozen_discriminator(pred)
        terms = [
            ops.mean(ops.abs(ops.cast(r, "float32") - ops.cast(f, "float32")))
            for r, f in zip(real_features, fake_features)
        ]
        return fake_logits, sum(terms) / len(terms)

    def _adversarial(self, target, pred):
        disc = self.discriminator
        on = ops.cast(self.step >= self.adversarial_start, "float32")
        if self.feature_matching > 0:
            fake_logits, matching = self.feature_matching_term(target, pred)
            generator_term = self.gen_loss_fn(fake_logits)
            self._track("feature_matching", matching)
        else:
            generator_term, matching = self.generator_term(pred), 0.0
        real = ops.cast(disc(target), "float32")
        fake = ops.cast(disc(ops.stop_gradient(pred)), "float32")
        disc_term = self.disc_loss_fn(real, fake)
        self._track("generator_adversarial", generator_term)
        self._track("discriminator_loss", disc_term)
        self._track("disc_accuracy", patch_accuracy(real, fake))
        generator = self.adversarial_weight * generator_term
        return on * (generator + self.feature_matching * matching + disc_term)


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
    feature_matching=0.0,
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
        feature_matching=feature_matching,
        dtype=dtype,
    )


def patch_accuracy(real_logits, fake_logits):
    """Fraction of patches the discriminator gets right (real > 0, fake < 0),
    averaged over the two sets."""
    return 0.5 * (
        ops.mean(ops.cast(real_logits > 0, "float32"))
        + ops.mean(ops.cast(fake_logits < 0, "float32"))
    )


class _DiscriminatorAlone(keras.Model):
    """Trains a discriminator on (real, fake) patch pairs, nothing else."""

    def __init__(self, discriminator, loss, **kwargs):
        super().__init__(**kwargs)
        self.discriminator = discriminator
        self.disc_loss_fn = adversarial_losses(loss)[0]
        self.accuracy = keras.metrics.Mean(name="disc_accuracy")

    def call(self, pair):
        real, fake = pair
        return self.discriminator(real), self.discriminator(fake)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        real, fake = (ops.cast(t, "float32") for t in y_pred)
        self.accuracy.update_state(patch_accuracy(real, fake))
        return self.disc_loss_fn(real, fake)


def random_patch_pairs(real, fake, count, patch, rng):
    """``count`` pairs of co-located ``patch``^3 patches of two volume sets
    ``(N, X, Y, Z)``, with a channel axis; the corner is drawn per pair."""
    n, *shape = np.shape(real)
    out_real = np.empty((count, patch, patch, patch, 1), np.float32)
    out_fake = np.empty_like(out_real)
    for i in range(count):
        v = rng.integers(n)
        corner = [rng.integers(s - patch + 1) for s in shape]
        box = (v, *(slice(c, c + patch) for c in corner))
        out_real[i, ..., 0] = real[box]
        out_fake[i, ..., 0] = fake[box]
    return out_real, out_fake


def discriminator_capacity(
    real,
    fake,
    real_test,
    fake_test,
    *,
    patch=32,
    steps=300,
    batch_size=4,
    channels=16,
    learning_rate=2e-4,
    loss="hinge",
    seed=0,
):
    """Held-out accuracy of a discriminator trained alone on real vs fake.

    The check that joint adversarial training can work at all (taming
    issues 44 and 93: a discriminator that never learns): a fresh
    :class:`PatchDiscriminator3D` learns to tell real patches from the same
    patches of their reconstructions (the autoencoder frozen), then scores
    patches of other volumes. 0.5 is chance.

    Parameters
    ----------
    real, fake : ndarray (N, X, Y, Z)
        Training volumes and their reconstructions.
    real_test, fake_test : ndarray (M, X, Y, Z)
        Held-out volumes and their reconstructions.

    Returns
    -------
    result : dict
        ``accuracy`` (held out), ``train_accuracy`` (last epoch) and
        ``steps``.
    """
    rng = np.random.default_rng(seed)
    train = random_patch_pairs(real, fake, steps * batch_size, patch, rng)
    test = random_patch_pairs(real_test, fake_test, 64, patch, rng)
    with seeded(seed):
        model = _DiscriminatorAlone(
            PatchDiscriminator3D(channels=channels), loss, name="discriminator_alone"
        )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.5))
    history = model.fit(list(train), epochs=1, batch_size=batch_size, verbose=0)
    real_logits, fake_logits = model.predict(
        list(test), batch_size=batch_size, verbose=0
    )
    return {
        "accuracy": float(patch_accuracy(real_logits, fake_logits)),
        "train_accuracy": float(history.history["disc_accuracy"][-1]),
        "steps": steps,
    }
