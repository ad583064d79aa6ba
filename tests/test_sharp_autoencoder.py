"""The sharp, fast autoencoder: layers, losses, patches, adversarial training."""

import numpy as np
import numpy.testing as npt
import pytest
from scipy import ndimage

pytest.importorskip("keras")

import keras  # noqa: E402

from dipy_ext.data import phantom_cohort  # noqa: E402
from dipy_ext.metrics import reconstruction_report, sharpness, sharpness_ratio  # noqa: E402
from dipy_ext.nn.discriminator import PatchDiscriminator3D  # noqa: E402
from dipy_ext.nn.layers import (  # noqa: E402
    GroupNorm3D,
    SubpixelConv3D,
    depth_to_space,
    space_to_depth,
)
from dipy_ext.nn.losses import gradient_difference_loss, ssim_loss  # noqa: E402
from dipy_ext.nn.vqvae import VQVAE3D  # noqa: E402


def tiny(**kw):
    cfg = {
        "input_shape": (32, 32, 32),
        "channels": (8, 16),
        "num_res_blocks": 1,
        "quantizer": "vq",
        "output_stage": "subpixel",
        "num_embeddings": 32,
        "embedding_dim": 4,
        "seed": 0,
    }
    cfg.update(kw)
    return VQVAE3D(**cfg)


@pytest.fixture(scope="module")
def volumes():
    return phantom_cohort(6, (32, 32, 32), rng=3)


def test_group_norm_matches_keras():
    x = np.random.default_rng(0).normal(2.0, 3.0, (2, 6, 5, 4, 16)).astype(np.float32)
    ours, ref = GroupNorm3D(4), keras.layers.GroupNormalization(4)
    ours.build(x.shape)
    ref.build(x.shape)
    weights = [
        np.linspace(0.5, 2, 16, dtype=np.float32),
        np.linspace(-1, 1, 16, dtype=np.float32),
    ]
    ours.set_weights(weights)
    ref.set_weights(weights)
    npt.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), atol=2e-5)


def test_space_to_depth_round_trip_and_subpixel_init():
    x = np.random.default_rng(0).random((2, 4, 6, 8, 3)).astype(np.float32)
    folded = np.asarray(space_to_depth(x))
    assert folded.shape == (2, 2, 3, 4, 24)
    npt.assert_array_equal(np.asarray(depth_to_space(folded)), x)
    # ICNR: a fresh sub-pixel convolution is a nearest-neighbour upsampling
    up = np.asarray(SubpixelConv3D(2)(x))
    assert up.shape == (2, 8, 12, 16, 2)
    npt.assert_allclose(up[:, 0::2, 0::2, 0::2], up[:, 1::2, 1::2, 1::2], atol=1e-6)


def test_structure_losses_see_blur():
    x = phantom_cohort(2, (32, 32, 32), rng=0)[..., None]
    blurred = ndimage.gaussian_filter(x, (0, 1, 1, 1, 0))
    for loss in (gradient_difference_loss, ssim_loss):
        npt.assert_allclose(np.asarray(loss(x, x)), 0.0, atol=1e-5)
        assert np.all(np.asarray(loss(x, blurred)) > 1e-3)


def test_sharpness_metrics():
    v = phantom_cohort(3, (32, 32, 32), rng=0)
    blurred = np.stack([ndimage.gaussian_filter(a, 1.0) for a in v])
    assert sharpness_ratio(v, v, paired=True) == pytest.approx(1.0)
    assert sharpness_ratio(v, blurred, paired=True) < 0.92
    assert sharpness(v[0]) > sharpness(blurred[0])
    with pytest.raises(ValueError, match="brain voxels"):
        sharpness(np.zeros((8, 8, 8)))
    report = reconstruction_report(v, blurred)
    assert report["sharpness_ratio"] < 0.92 and report["psnr_db"] > 15
    assert 0 <= report["classifier_two_sample_test"]["accuracy"] <= 1


def test_pixel_shuffle_compression_and_old_layout():
    assert tiny().latent_shape == (8, 8, 8) and tiny().compression == 4
    assert tiny(channels=(8, 16, 16)).compression == 8
    assert tiny(pixel_shuffle=False).compression == 2


def test_patch_training_gives_whole_volume_model(volumes):
    vq = tiny()
    history = vq.fit(volumes, epochs=2, batch_size=2, patch_shape=(16, 16, 16))
    assert np.isfinite(history.history["loss"]).all()
    assert vq.predict(volumes).shape == volumes.shape
    assert vq.encode(volumes[:2]).shape == (2, 8, 8, 8, 4)
    assert vq.decode(vq.encode(volumes[:1])).shape == (1, 32, 32, 32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"patch_shape": (10, 16, 16)},
            "patch_shape should be 3 positive multiples of 4",
        ),
        ({"patch_shape": (64, 16, 16)}, "no larger than the grid"),
        ({"structure_losses": {"lpips": 1.0}}, "structure loss should be one of"),
        ({"structure_losses": {"ssim": float("nan")}}, "finite number"),
        ({"adversarial_weight": -1.0}, "adversarial_weight should be a finite"),
        ({"adversarial_weight": float("inf")}, "adversarial_weight should be a finite"),
        ({"adversarial_start": -5}, "adversarial_start should be an integer"),
        ({"adversarial_loss": "wasserstein"}, "adversarial_loss should be one of"),
        ({"discriminator_channels": 0}, "discriminator_channels"),
        ({"epochs": 0}, "epochs should be an integer"),
        ({"learning_rate": float("nan")}, "learning_rate should be a finite"),
    ],
)
def test_bad_fit_options(volumes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny().fit(volumes, **kwargs)


def test_generator_term_leaves_discriminator_alone():
    """The generator's adversarial term moves the autoencoder only."""
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("gradient check written with tf.GradientTape")
    disc = PatchDiscriminator3D(channels=4, num_layers=2, groups=2)
    x = tf.Variable(
        np.random.default_rng(0).random((1, 16, 16, 16, 1)), dtype="float32"
    )
    disc(x)
    with tf.GradientTape(persistent=True) as tape:
        frozen = [keras.ops.stop_gradient(v) for v in disc.trainable_variables]
        logits, _ = disc.stateless_call(frozen, disc.non_trainable_variables, x)
        term = keras.ops.mean(logits)
    grads = tape.gradient(term, [v.value for v in disc.trainable_variables])
    assert all(g is None or not np.any(np.asarray(g)) for g in grads)
    assert np.any(np.asarray(tape.gradient(term, x)))


def _discriminator_accuracy(vq, real):
    recon = vq.predict(real)[..., None]
    disc = vq.trainer.discriminator
    on_real = np.asarray(disc(real[..., None])) > 0
    on_fake = np.asarray(disc(recon)) < 0
    return 0.5 * (on_real.mean() + on_fake.mean())


class _Snapshots(keras.callbacks.Callback):
    """Discriminator and autoencoder weights at the start and each epoch end."""

    def _take(self):
        return {
            part: [np.array(w) for w in getattr(self.model, part).get_weights()]
            for part in ("discriminator", "network")
        }

    def on_train_begin(self, logs=None):
        self.at = [self._take()]

    def on_epoch_end(self, epoch, logs=None):
        self.at.append(self._take())


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


ADVERSARIAL_RUN = {
    "epochs": 12,
    "batch_size": 2,
    "learning_rate": 2e-3,
    "adversarial_start": 6,  # steps: 3 per epoch, so the first 2 epochs
}


@pytest.fixture(scope="module")
def adversarial_runs(volumes):
    """Two fits from the same seed, adversarial weight 1e-6 and 1."""
    runs = {}
    for weight in (1e-6, 1.0):
        vq, snaps = tiny(), _Snapshots()
        history = vq.fit(
            volumes, adversarial_weight=weight, callbacks=[snaps], **ADVERSARIAL_RUN
        ).history
        runs[weight] = (vq, snaps.at, history)
    return runs


@pytest.mark.slow
def test_discriminator_waits_then_learns(adversarial_runs, volumes):
    """No discriminator update before the start step; then it tells fakes."""
    vq, at, history = adversarial_runs[1e-6]
    for epoch in (1, 2):
        assert _same(at[epoch]["discriminator"], at[0]["discriminator"])
    assert not _same(at[3]["discriminator"], at[0]["discriminator"])
    assert max(history["disc_accuracy"][6:]) > 0.6
    assert _discriminator_accuracy(vq, volumes) > 0.6


@pytest.mark.slow
def test_generator_term_starts_with_the_discriminator(adversarial_runs):
    """The adversarial weight changes nothing before the start, then the decoder."""
    (_, weak, _), (_, strong, _) = adversarial_runs[1e-6], adversarial_runs[1.0]
    for epoch in (1, 2):
        assert _same(weak[epoch]["network"], strong[epoch]["network"])
    assert not _same(weak[-1]["network"], strong[-1]["network"])


@pytest.mark.slow
def test_generator_term_fools_a_fixed_discriminator(adversarial_runs, volumes):
    """Descending the generator term raises the discriminator's score of the
    reconstructions (the sign is right) and leaves the discriminator alone."""
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("gradient check written with tf.GradientTape")
    vq = adversarial_runs[1e-6][0]
    trainer, x = vq.trainer, volumes[:2, ..., None]
    disc_before = [np.array(w) for w in trainer.discriminator.get_weights()]

    def score():
        return float(np.mean(np.asarray(trainer.discriminator(trainer.network(x)))))

    before, trained = score(), trainer.network.get_weights()
    weights = trainer.network.trainable_variables
    optimizer = keras.optimizers.Adam(1e-3)
    try:
        for _ in range(5):
            with tf.GradientTape() as tape:
                term = trainer.generator_term(trainer.network(x))
            optimizer.apply(tape.gradient(term, [w.value for w in weights]), weights)
        assert score() > before
        assert _same(trainer.discriminator.get_weights(), disc_before)
    finally:  # the fixture's model is shared
        trainer.network.set_weights(trained)


@pytest.mark.slow
def test_discriminator_initialisation_follows_the_seed(volumes):
    """The discriminator starts from the model's seed, not from Python's
    global generator (Keras' unseeded initialisers draw their seeds there):
    the outcome of a test used to depend on the tests run before it."""
    import random

    state, runs = random.getstate(), []
    try:
        for global_seed in (1, 2):
            random.seed(global_seed)
            vq = tiny()
            vq.fit(
                volumes[:2],
                epochs=1,
                batch_size=2,
                adversarial_weight=0.1,
                adversarial_start=100,  # never: the weights stay initial
            )
            runs.append(vq.trainer.discriminator.get_weights())
    finally:
        random.setstate(state)
    assert _same(*runs)


@pytest.mark.slow
def test_resume_restores_discriminator(volumes, tmp_path):
    """A killed adversarial run resumes with the discriminator it had."""

    class StopAfter(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.at_start = [
                np.array(w) for w in self.model.discriminator.get_weights()
            ]

        def on_epoch_end(self, epoch, logs=None):
            self.last = [np.array(w) for w in self.model.discriminator.get_weights()]

    options = {
        "epochs": 3,
        "batch_size": 2,
        "adversarial_weight": 0.1,
        "checkpoint_dir": tmp_path / "ckpt",
    }
    first = Record()
    with pytest.raises(KeyboardInterrupt):
        tiny().fit(volumes, callbacks=[first, StopAfter()], **options)
    again = Record()

    class Check(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.restored = [
                np.array(w) for w in self.model.discriminator.get_weights()
            ]

    check = Check()
    history = tiny().fit(volumes, callbacks=[check, again], **options)
    assert len(history.history["loss"]) == 1
    for restored, saved in zip(check.restored, first.last):
        npt.assert_array_equal(restored, saved)
    # and the model file never holds it
    path = tmp_path / "vq.npz"
    vq = tiny()
    vq.fit(volumes[:2], epochs=1, batch_size=2, adversarial_weight=0.1)
    vq.save(path)
    assert VQVAE3D.load(path).count_params() == tiny().count_params()


def test_discriminator_has_its_own_learning_rate_and_momentum():
    """TwoGroupAdam: the second group steps ``second_lr_ratio`` times as far
    (Adam's first step is the learning rate times the gradient's sign)."""
    from dipy_ext.nn.optimizers import TwoGroupAdam

    a, b = (
        keras.Variable(np.zeros(3, np.float32)),
        keras.Variable(np.zeros(3, np.float32)),
    )
    opt = TwoGroupAdam(1e-2, second=[b], second_lr_ratio=3.0, second_beta_1=0.5)
    grad = np.array([1.0, -2.0, 0.5], np.float32)
    opt.apply([grad, grad], [a, b])
    npt.assert_allclose(np.asarray(a), -1e-2 * np.sign(grad), rtol=1e-3)
    npt.assert_allclose(np.asarray(b), -3e-2 * np.sign(grad), rtol=1e-3)
    opt.apply([grad, grad], [a, b])  # beta_1 0.5 vs 0.9: the moments differ
    npt.assert_allclose(
        np.asarray(opt._momentums[1]), 0.75 * grad, rtol=1e-5
    )  # 0.5 * 0.5 g + 0.5 g
    npt.assert_allclose(np.asarray(opt._momentums[0]), 0.19 * grad, rtol=1e-5)


@pytest.mark.slow
def test_fit_gives_the_discriminator_its_own_optimizer_group(volumes):
    vq = tiny()
    history = vq.fit(
        volumes[:2],
        epochs=1,
        batch_size=2,
        adversarial_weight=0.1,
        adversarial_start=0,
        feature_matching=1.0,
        discriminator_learning_rate=5e-4,
        learning_rate=2e-4,
    ).history
    opt = vq.trainer.optimizer
    assert opt.second_lr_ratio == pytest.approx(2.5)
    disc_ids = {id(v) for v in vq.trainer.discriminator.trainable_variables}
    assert opt._second_ids == disc_ids and len(opt._second_index) == len(disc_ids)
    assert (
        np.isfinite(history["feature_matching"][0])
        and history["feature_matching"][0] > 0
    )


@pytest.mark.slow
def test_discriminator_capacity_against_a_frozen_autoencoder(volumes):
    """A discriminator alone tells held-out real patches from reconstructions
    of a briefly trained (blurry) autoencoder."""
    from dipy_ext.nn.autoencoder_training import discriminator_capacity

    vq = tiny()
    vq.fit(volumes, epochs=3, batch_size=2, learning_rate=2e-3)
    recon = vq.predict(volumes)
    result = discriminator_capacity(
        volumes[:4], recon[:4], volumes[4:], recon[4:], patch=16, steps=60, seed=0
    )
    assert result["accuracy"] >= 0.75, result


@pytest.mark.slow
def test_interpolating_output_stage_leaves_no_stride_grid(phantoms, heldout_phantoms):
    """Trained alike, the sub-pixel output leaves a peak at the latent stride
    (period 4 at 4x); trilinear upsampling with a full-resolution head does not."""
    from dipy_ext.metrics.spectrum import spectral_spikes

    real = spectral_spikes(heldout_phantoms, (2, 4))
    spikes = {}
    for stage in ("subpixel", "interpolate"):
        vq = VQVAE3D(
            input_shape=(32, 32, 32),
            channels=(16, 32),
            num_res_blocks=1,
            quantizer="vq",
            num_embeddings=64,
            embedding_dim=4,
            seed=0,
            verbose=False,
            output_stage=stage,
        )
        vq.fit(phantoms, epochs=12, batch_size=4, learning_rate=2e-3)
        spikes[stage] = spectral_spikes(vq.predict(heldout_phantoms), (2, 4))
    assert spikes["subpixel"][4] > 1.3 * real[4], (spikes, real)
    assert spikes["interpolate"][4] < 1.15 * real[4], (spikes, real)
