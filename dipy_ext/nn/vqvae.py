"""VQVAE3D: compress a 3D volume into a small grid of codebook vectors.

Encoder: (with ``pixel_shuffle``, the default) 2x2x2 voxel blocks folded
into channels, a convolution, then per level ``num_res_blocks`` residual
blocks (GroupNorm + SiLU) and a stride-2 convolution between levels, then a
1x1x1 convolution to ``embedding_dim`` channels. Quantizer: EMA codebook with
dead-code restart (``quantizer.py``). Decoder: the mirror image, upsampling
by nearest resize + convolution between levels and a sub-pixel convolution
(ICNR-initialised) back to full resolution.

The latent grid is ``2 ** len(channels)`` times smaller per axis with
``pixel_shuffle`` (``channels=(32, 64)``: 4x, ``(32, 64, 128)``: 8x) and
``2 ** (len(channels) - 1)`` without it (the layout of model files made
before it existed, which load as they were). With pixel shuffling no layer
works on the full-resolution grid, where residual blocks and GroupNorm took
more than half of a training step's time for a sixth of the useful work.
"""

import numpy as np

from dipy_ext._checks import check_integer, check_number
from dipy_ext.nn._backend import dtype_policy, keras, layers, seeded
from dipy_ext.nn.autoencoder_training import make_trainer
from dipy_ext.nn.discriminator import adversarial_losses
from dipy_ext.nn.distribute import make_strategy, strategy_scope
from dipy_ext.nn.first_stage import register_first_stage
from dipy_ext.nn.layers import (
    ResBlock3D,
    SpaceToDepth3D,
    SubpixelConv3D,
    TrilinearUpsample3D,
    Upsample3D,
    downsample,
    group_norm,
)
from dipy_ext.nn.losses import check_structure_losses, reconstruction_loss
from dipy_ext.nn.model_file import SavedModel, assign_weights, model_weights
from dipy_ext.nn.optimizers import TwoGroupAdam
from dipy_ext.nn.quantizer import CodebookUsage, make_quantizer, usage_and_perplexity
from dipy_ext.nn.training import (
    ArrayBatches,
    as_volume_batch,
    fit_in_scope,
    learning_rate_schedule,
)
from dipy_ext.preprocessing import grid_affine, skull_stripped


def _checked_intensity_map(knots):
    """``knots`` as a (2, K) float array with increasing x, or None."""
    if knots is None:
        return None
    knots = np.asarray(knots, dtype=np.float64)
    if knots.ndim != 2 or knots.shape[0] != 2 or not np.isfinite(knots).all():
        raise ValueError(
            f"intensity_map should be finite (decoded, real) knots of shape (2, K), "
            f"got shape {knots.shape}"
        )
    if np.any(np.diff(knots[0]) <= 0):
        raise ValueError("intensity_map's decoded intensities should increase")
    return knots


OUTPUT_STAGES = ("interpolate", "subpixel")
# the benchmark's choice (tools/bench_autoencoder.py): 16 bits per position
DEFAULT_QUANTIZER = {"kind": "fsq", "levels": [8, 8, 8, 5, 5, 5]}
# the layout of model files made before each option existed
LEGACY_CONFIG = {"pixel_shuffle": False, "quantizer": "vq", "output_stage": "subpixel"}
# channels of the full-resolution head of the "interpolate" output stage
HEAD_CHANNELS = 16


def _quantizer_spec(quantizer, **vq_options):
    """A quantizer spec from a kind or a spec, "vq"/"rvq" gaps filled."""
    spec = {"kind": quantizer} if isinstance(quantizer, str) else dict(quantizer)
    if spec.get("kind") in ("vq", "rvq"):
        spec = {**vq_options, **spec}
        for name in ("num_embeddings", "embedding_dim"):
            spec[name] = int(spec[name])
        for name in ("commitment_cost", "decay", "dead_code_threshold"):
            spec[name] = float(spec[name])
    return spec


def _per_level(value, levels, name):
    values = (value,) * levels if np.isscalar(value) else tuple(value)
    if len(values) != levels:
        raise ValueError(f"{name} should be an int or {levels} ints, got {value}")
    return tuple(int(v) for v in values)


def build_encoder(
    channels, num_res_blocks, embedding_dim, groups, dtype, pixel_shuffle
):
    """Functional encoder: (X, Y, Z, 1) -> (X/f, Y/f, Z/f, embedding_dim).

    Spatial axes are left undeclared (fully convolutional), so a network
    trained on patches encodes whole volumes.
    """
    x = inputs = keras.Input((None, None, None, 1), name="volume")
    if pixel_shuffle:
        # fold 2x2x2 voxel blocks into channels: no layer runs at full size
        x = SpaceToDepth3D(2, dtype=dtype)(x)
    x = layers.Conv3D(channels[0], 3, padding="same", dtype=dtype)(x)
    for level, ch in enumerate(channels):
        for _ in range(num_res_blocks[level]):
            x = ResBlock3D(ch, groups=groups, dtype=dtype)(x)
        if level < len(channels) - 1:
            x = downsample(channels[level + 1], dtype=dtype)(x)
    x = group_norm(channels[-1], groups, dtype=dtype)(x)
    x = layers.Activation("silu", dtype=dtype)(x)
    z = layers.Conv3D(embedding_dim, 1, dtype="float32", name="to_latent")(x)
    return keras.Model(inputs, z, name="encoder")


def build_decoder(channels, num_res_blocks, embedding_dim, groups, dtype, output):
    """Functional decoder: (x, y, z, embedding_dim) -> (X, Y, Z, 1).

    ``output``: "subpixel" or "interpolate" (a last 2x step to full
    resolution, see ``VQVAE3D(output_stage=...)``), or "conv" (no last
    step: the layout without pixel shuffling).
    """
    x = inputs = keras.Input((None, None, None, embedding_dim), name="latent")
    x = layers.Conv3D(channels[-1], 3, padding="same", dtype=dtype)(x)
    for level in reversed(range(len(channels))):
        for _ in range(num_res_blocks[level]):
            x = ResBlock3D(channels[level], groups=groups, dtype=dtype)(x)
        if level > 0:
            x = Upsample3D(channels[level - 1], dtype=dtype)(x)
    x = group_norm(channels[0], groups, dtype=dtype)(x)
    x = layers.Activation("silu", dtype=dtype)(x)
    if output == "subpixel":
        # sub-pixel output: 8 voxels predicted per half-resolution voxel
        out = SubpixelConv3D(1, dtype="float32", name="to_volume")(x)
    elif output == "interpolate":
        # linear from here on: trilinear interpolation has a zero at the
        # 2-voxel period, and no nonlinearity after it can mix frequencies
        # back into that period (a SiLU here left spikes of 1.07-1.52)
        x = layers.Conv3D(HEAD_CHANNELS, 1, dtype=dtype)(x)
        x = TrilinearUpsample3D(dtype=dtype)(x)
        out = layers.Conv3D(1, 3, padding="same", dtype="float32", name="to_volume")(x)
    else:
        out = layers.Conv3D(1, 3, padding="same", dtype="float32", name="to_volume")(x)
    return keras.Model(inputs, out, name="decoder")


class VQVAENetwork(keras.Model):
    """encoder -> quantizer -> decoder; the commitment loss is added in call."""

    def __init__(self, encoder, quantizer, decoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder

    def call(self, x, training=False):
        z = self.encoder(x, training=training)
        q, _ = self.quantizer(z, training=training)
        return self.decoder(q, training=training)


@register_first_stage
class VQVAE3D(SavedModel):
    """3D VQ-VAE for volumes on a fixed model grid (a first stage of
    :class:`~dipy_ext.nn.diffusion.LatentDiffusion3D`, see
    :mod:`dipy_ext.nn.first_stage`)."""

    def __init__(
        self,
        *,
        input_shape=(64, 64, 64),
        channels=(32, 64),
        num_res_blocks=1,
        pixel_shuffle=True,
        quantizer=DEFAULT_QUANTIZER,
        num_embeddings=512,
        embedding_dim=8,
        commitment_cost=0.25,
        decay=0.99,
        dead_code_threshold=1.0,
        output_stage="interpolate",
        groups=8,
        loss="l1",
        background_weight=1.0,
        affine=None,
        space=None,
        background_threshold=None,
        intensity_map=None,
        mixed_precision=False,
        seed=None,
        verbose=True,
    ):
        """Build the model.

        Parameters
        ----------
        input_shape : tuple of 3 int, optional
            Model grid shape; each axis divisible by the compression factor.
        channels : tuple of int, optional
            Channels per level; ``len(channels) - 1`` downsamplings by 2
            between levels.
        num_res_blocks : int or tuple of int, optional
            Residual blocks per level (one value, or one per level).
        pixel_shuffle : bool, optional
            Fold 2x2x2 voxel blocks into channels at the input and unfold
            them at the output (sub-pixel convolution), so the first level
            runs at half resolution: the compression factor per axis is
            ``2 ** len(channels)`` (else ``2 ** (len(channels) - 1)``), and a
            training step costs about a third.
        quantizer : {"vq", "fsq", "rvq"} or dict, optional
            The quantizer (:mod:`dipy_ext.nn.quantizer`): a kind, or a spec
            ``{"kind": ..., **options}`` such as ``{"kind": "rvq", "stages":
            2}``. The options below fill what a "vq" or "rvq" spec leaves
            out. Default: FSQ with levels ``[8, 8, 8, 5, 5, 5]`` (16 bits in
            6 channels), the choice of ``tools/bench_autoencoder.py`` (see
            ``doc/autoencoder.rst``).
        num_embeddings : int, optional
            Codebook size ("vq", "rvq").
        embedding_dim : int, optional
            Latent channels (length of a code; "vq", "rvq"; FSQ has one
            channel per level).
        commitment_cost : float, optional
            Weight of the commitment loss ("vq", "rvq").
        decay : float, optional
            EMA decay of the codebook ("vq", "rvq").
        dead_code_threshold : float, optional
            Codes whose EMA count per batch falls below this are restarted
            ("vq", "rvq").
        output_stage : {"interpolate", "subpixel"}, optional
            How the decoder's last level returns to full resolution (with
            ``pixel_shuffle``): "subpixel" predicts each 2x2x2 block's eight
            voxels from separate filters, which drift apart in training and
            leave a 2-voxel grid; "interpolate" upsamples 16 feature maps
            trilinearly and finishes with one linear convolution at full
            resolution: the same filter at every voxel, and nothing that can
            put power back at the 2-voxel period (no grid).
        groups : int, optional
            GroupNormalization groups.
        loss : {"l1", "l2"}, optional
            Reconstruction loss.
        background_weight : float, optional
            Loss weight of background voxels (target ~ 0); < 1 spends the
            capacity on the brain.
        affine : ndarray (4, 4), optional
            Voxel-to-world affine of the model grid, written into generated
            NIfTI files; default 1 mm isotropic, centred on the origin.
        space : {None, "MNI"}, optional
            The space of ``affine``: "MNI" when the grid is MNI space (generated
            NIfTI files then say so, ``sform_code`` 4); None for an aligned
            grid of unknown space.
        background_threshold : float, optional
            For skull-stripped data (zero outside the brain): reconstructed
            and decoded volumes are clipped to [0, 1] and voxels outside the
            brain (the largest connected region above this intensity, holes
            filled) set to 0, as skull stripping leaves them; a decoder
            alone cannot make that hard edge. None (default): the decoder's
            output as it is.
        intensity_map : array (2, K), optional
            Knots ``(decoded, real)`` of a monotone map applied to the
            decoder's output (before the background cut), as fitted by
            :meth:`calibrate_intensity`; None: no map.
        mixed_precision : bool, optional
            Compute in bfloat16 (weights stay float32; the quantizer, the
            output layer and the losses stay float32).
        seed : int, optional
            Seeds the weights' initialisation (through Keras' global
            generator, while the model is built), the codebook restarts and
            the batch order, for reproducible runs; numpy's and Python's
            global generators are left as they were.
        verbose : bool, optional
            Show training progress (default): a Keras progress bar on a
            terminal, one line per epoch when output goes to a file.
        """
        self._set_grid(input_shape, channels, num_res_blocks, pixel_shuffle)
        self.quantizer_spec = _quantizer_spec(
            quantizer,
            num_embeddings=num_embeddings,
            embedding_dim=embedding_dim,
            commitment_cost=commitment_cost,
            decay=decay,
            dead_code_threshold=dead_code_threshold,
        )
        # a fixed seed: an unseeded generator would draw from Python's global one
        probe = make_quantizer(self.quantizer_spec, seed=0)
        self.num_embeddings = probe.num_codes
        self.embedding_dim = probe.embedding_dim
        self.commitment_cost = float(commitment_cost)
        self.decay = float(decay)
        self.dead_code_threshold = float(dead_code_threshold)
        self.groups = int(groups)
        self.loss = loss
        reconstruction_loss(loss)  # validate early
        self.background_weight = float(background_weight)
        self._set_output(output_stage, affine, space, background_threshold)
        self.intensity_map = _checked_intensity_map(intensity_map)
        self.mixed_precision = bool(mixed_precision)
        self.seed = seed
        self.verbose = verbose
        with seeded(seed):
            self.network = self._build_network()
        self.encoder = self.network.encoder
        self.quantizer = self.network.quantizer
        self.decoder = self.network.decoder

    def _set_grid(self, input_shape, channels, num_res_blocks, pixel_shuffle):
        self.input_shape = tuple(int(s) for s in input_shape)
        self.channels = tuple(int(c) for c in channels)
        levels = len(self.channels)
        self.num_res_blocks = _per_level(num_res_blocks, levels, "num_res_blocks")
        self.pixel_shuffle = bool(pixel_shuffle)
        factor = self.compression = 2 ** (levels - 1 + self.pixel_shuffle)
        if len(self.input_shape) != 3 or any(s % factor for s in self.input_shape):
            raise ValueError(
                f"input_shape should be 3 ints divisible by {factor} "
                f"(the compression factor), got {self.input_shape}"
            )
        self.latent_shape = tuple(s // factor for s in self.input_shape)

    def _set_output(self, output_stage, affine, space, background_threshold):
        if output_stage not in OUTPUT_STAGES:
            raise ValueError(
                f"output_stage should be one of {OUTPUT_STAGES}, got {output_stage!r}"
            )
        self.output_stage = output_stage
        self.affine = (
            grid_affine(self.input_shape, (1.0, 1.0, 1.0))
            if affine is None
            else np.asarray(affine, dtype=float)
        )
        if space not in (None, "MNI"):
            raise ValueError(f"space should be None or 'MNI', got {space!r}")
        self.space = space
        if background_threshold is not None and not 0 <= background_threshold < 1:
            raise ValueError(
                "background_threshold should be None or in [0, 1), "
                f"got {background_threshold!r}"
            )
        self.background_threshold = background_threshold

    def _build_network(self):
        """A new, built encoder -> quantizer -> decoder network."""
        dtype = dtype_policy(self.mixed_precision)
        args = (self.channels, self.num_res_blocks, self.embedding_dim, self.groups)
        output = self.output_stage if self.pixel_shuffle else "conv"
        network = VQVAENetwork(
            build_encoder(*args, dtype, self.pixel_shuffle),
            make_quantizer(self.quantizer_spec, seed=self.seed),
            build_decoder(*args, dtype, output),
        )
        network(np.zeros((1, *self.input_shape, 1), np.float32))  # build
        return network

    def get_config(self):
        """Architecture settings (what :meth:`save` stores)."""
        return {
            "input_shape": list(self.input_shape),
            "channels": list(self.channels),
            "num_res_blocks": list(self.num_res_blocks),
            "pixel_shuffle": self.pixel_shuffle,
            "output_stage": self.output_stage,
            "quantizer": dict(self.quantizer_spec),
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "commitment_cost": self.commitment_cost,
            "decay": self.decay,
            "dead_code_threshold": self.dead_code_threshold,
            "groups": self.groups,
            "loss": self.loss,
            "background_weight": self.background_weight,
            "affine": self.affine.tolist(),
            "space": self.space,
            "background_threshold": self.background_threshold,
            "intensity_map": None
            if self.intensity_map is None
            else self.intensity_map.tolist(),
        }

    @property
    def voxel_size(self):
        """Voxel size (mm) of the model grid."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def codebook(self):
        """The quantizer's code vectors (``(num_embeddings, embedding_dim)``
        for "vq"), numpy."""
        return self.quantizer.codebook

    def count_params(self):
        """Number of weights (trainable or not)."""
        return int(sum(np.prod(v.shape) for v in self.network.weights))

    # ------------------------------------------------------------------ train
    def fit(
        self,
        volumes,
        *,
        epochs=10,
        batch_size=2,
        learning_rate=2e-4,
        validation_data=None,
        callbacks=None,
        checkpoint_dir=None,
        keep_backup=False,
        flip_augment=False,
        patch_shape=None,
        structure_losses=None,
        adversarial_weight=0.0,
        adversarial_start=None,
        adversarial_loss="hinge",
        discriminator_channels=16,
        discriminator_learning_rate=1e-4,
        feature_matching=0.0,
        distribute=None,
    ):
        """Train on volumes already on the model grid, in [0, 1].

        Parameters
        ----------
        volumes : ndarray (N, X, Y, Z) or list of (X, Y, Z)
            Training volumes (a memory map is read batch by batch).
        epochs : int, optional
        batch_size : int, optional
        learning_rate : float, optional
            Peak Adam learning rate (linear warm-up, then cosine decay).
        validation_data : ndarray (M, X, Y, Z), optional
            Held-out volumes evaluated (whole) after each epoch (``val_``
            metrics).
        callbacks : list of keras.callbacks.Callback, optional
            Extra callbacks (for example ``keras.callbacks.CSVLogger``).
        checkpoint_dir : str or Path, optional
            Back up the training state (the discriminator's too) after every
            epoch; a run interrupted and started again with the same folder
            resumes where it stopped.
        keep_backup : bool, optional
            Keep the backup once training completes (by default it is
            removed): a caller that removes it after writing the model file
            loses no training if that write fails.
        flip_augment : bool, optional
            Randomly flip volumes left-right (first axis of an RAS grid).
        patch_shape : tuple of 3 int, optional
            Train on random crops of this shape (favouring crops holding
            brain), each axis a multiple of the compression factor: large
            grids train at the cost of the patch. The network is fully
            convolutional, so it still encodes and decodes whole volumes.
        structure_losses : dict of str -> float, optional
            Weights of structure losses added to the reconstruction loss:
            ``"gradient"`` (gradient difference) and ``"ssim"`` (1 - SSIM);
            see :mod:`dipy_ext.nn.losses`. Default ``{"gradient": 1.0}``
            (it raised held-out SSIM from 0.70 to 0.78 in equal training
            time; the SSIM loss costs twice the step time and did not help
            at equal time); ``{}`` for the reconstruction loss alone.
        adversarial_weight : float, optional
            Weight of a PatchGAN adversarial loss (0: none, the default;
            0.02-0.05 is a start: 0.05 lifted the sharpness ratio of
            reconstructions from 0.81 to 1.14 in a short run). A
            :class:`~dipy_ext.nn.discriminator.PatchDiscriminator3D` is
            trained alongside; it is checkpointed but not saved with the model.
        adversarial_start : int, optional
            Steps of reconstruction-only warm-up before the adversarial terms
            switch on (default: a third of the run).
        adversarial_loss : {"hinge", "least_squares", "non_saturating"}, optional
        discriminator_channels : int, optional
            First-layer channels of the discriminator.
        discriminator_learning_rate : float, optional
            Peak learning rate of the discriminator's own Adam (beta_1 0.5,
            the same warm-up and decay). The default 1e-4 is MONAI's: on the
            default cohort a discriminator trained alone against a frozen
            autoencoder told held-out reconstructions from real 0.99 of the
            time at 1e-4, and learned nothing at 1e-3 (0.51).
        feature_matching : float, optional
            Weight of discriminator feature matching: L1 between the
            discriminator's block outputs on real and reconstructed patches,
            a perceptual loss that needs no pretrained network (0: none).
        distribute : str or strategy, optional
            Data-parallel training: "mirrored" (local GPUs),
            "multi_worker" (a cluster in ``TF_CONFIG``), "data_parallel"
            (JAX), or a ``tf.distribute.Strategy`` /
            ``keras.distribution.Distribution``; see
            :mod:`dipy_ext.nn.distribute`. ``batch_size`` is the global
            batch. The codebook's EMA statistics are summed across replicas.

        Returns
        -------
        history : keras.callbacks.History
            Per-epoch ``loss``, ``l1``, each structure loss,
            ``codebook_usage``, ``perplexity``; with a discriminator also
            ``generator_adversarial``, ``discriminator_loss`` and
            ``disc_accuracy`` (its accuracy on real vs reconstructed
            patches); ``val_*`` for validation data.

        Raises
        ------
        ValueError
            Volumes of the wrong shape or with NaN, or a bad option value.
        """
        structure_losses = check_structure_losses(
            {"gradient": 1.0} if structure_losses is None else structure_losses
        )
        adversarial_losses(adversarial_loss)
        check_integer("epochs", epochs, 1)
        check_integer("batch_size", batch_size, 1)
        check_integer("discriminator_channels", discriminator_channels, 1)
        check_number("learning_rate", learning_rate)
        check_number("adversarial_weight", adversarial_weight)
        check_number("discriminator_learning_rate", discriminator_learning_rate)
        check_number("feature_matching", feature_matching)
        train, val = self._training_batches(
            volumes, validation_data, batch_size, flip_augment, patch_shape
        )
        if adversarial_start is None:
            adversarial_start = epochs * len(train) // 3
        check_integer("adversarial_start", adversarial_start, 0)
        return self._fit_batches(
            train,
            val,
            distribute,
            optimizer={
                "epochs": epochs,
                "learning_rate": learning_rate,
                "discriminator_learning_rate": discriminator_learning_rate,
            },
            losses={
                "structure_losses": structure_losses,
                "adversarial_weight": adversarial_weight,
                "adversarial_start": adversarial_start,
                "adversarial_loss": adversarial_loss,
                "discriminator_channels": discriminator_channels,
                "feature_matching": feature_matching,
            },
            callbacks=callbacks,
            checkpoint_dir=checkpoint_dir,
            keep_backup=keep_backup,
        )

    def _fit_batches(self, train, val, distribute, *, optimizer, losses, **backup):
        """Train the network (a copy in a strategy's scope) on batches."""
        strategy = make_strategy(distribute)
        with strategy_scope(strategy):
            # a strategy's variables are made in its scope: train a copy there
            network = self.network
            if strategy is not None:
                network = self._build_network()
                network.set_weights(self.network.get_weights())
            trainer = self._compiled_trainer(network, train, optimizer, losses)
        self.trainer = trainer
        history = fit_in_scope(
            trainer,
            train,
            epochs=optimizer["epochs"],
            validation_data=val,
            strategy=strategy,
            verbose=self.verbose,
            extra_callbacks=[CodebookUsage(network.quantizer)],
            **backup,
        )
        if network is not self.network:
            self.network.set_weights(network.get_weights())
        return history

    def check_patch_shape(self, patch_shape):
        """``patch_shape`` as a tuple (None stays None), or a ValueError
        unless 3 positive multiples of the compression within the grid."""
        if patch_shape is None:
            return None
        patch_shape = tuple(int(p) for p in patch_shape)
        if (
            len(patch_shape) != 3
            or any(p % self.compression or p <= 0 for p in patch_shape)
            or any(p > s for p, s in zip(patch_shape, self.input_shape))
        ):
            raise ValueError(
                f"patch_shape should be 3 positive multiples of {self.compression} "
                f"no larger than the grid {self.input_shape}, got {patch_shape}"
            )
        return patch_shape

    def _training_batches(
        self, volumes, validation_data, batch_size, flip_augment, patch_shape
    ):
        """The training batches (patches, if asked) and validation batches."""
        patch_shape = self.check_patch_shape(patch_shape)
        data, _ = as_volume_batch(volumes, self.input_shape)
        train = ArrayBatches(
            data,
            batch_size,
            seed=self.seed,
            flip_axis=1 if flip_augment else None,
            patch_shape=patch_shape,
            patch_multiple=self.compression,
        )
        val = None
        if validation_data is not None:
            val_data, _ = as_volume_batch(
                validation_data, self.input_shape, name="validation_data"
            )
            val = ArrayBatches(val_data, batch_size, shuffle=False)
        return train, val

    def _compiled_trainer(self, network, train, optimizer, losses):
        """The training model (a discriminator too, if asked), compiled with
        one optimizer of two learning rates."""
        # the discriminator's initial weights come from the seed too (not
        # from whatever Keras' global generator holds): fits are repeatable
        with seeded(None if self.seed is None else self.seed + 1):
            trainer = make_trainer(
                network,
                loss=self.loss,
                background_weight=self.background_weight,
                dtype=dtype_policy(self.mixed_precision),
                **losses,
            )
            trainer.build_for(train.patch_shape or self.input_shape)
        disc = trainer.discriminator
        learning_rate = optimizer["learning_rate"]
        trainer.compile(
            optimizer=TwoGroupAdam(
                learning_rate_schedule(learning_rate, optimizer["epochs"] * len(train)),
                second=[] if disc is None else disc.trainable_variables,
                second_lr_ratio=optimizer["discriminator_learning_rate"]
                / max(learning_rate, 1e-12),
                second_beta_1=0.5,
            )
        )
        return trainer

    # -------------------------------------------------------------- inference
    def predict(self, volumes, *, batch_size=1):
        """Reconstruct volumes: encode, quantize, decode.

        Parameters
        ----------
        volumes : ndarray (X, Y, Z) or (N, X, Y, Z), or list of (X, Y, Z)
            Volumes on the model grid, in [0, 1].
        batch_size : int, optional
            Volumes per forward pass.

        Returns
        -------
        reconstructions : ndarray, float32
            The input's shape (one volume in, one volume out).

        Raises
        ------
        ValueError
            Volumes of another shape than the model grid, or with NaN/Inf.
        """
        data, single = as_volume_batch(volumes, self.input_shape)
        out = self.network.predict(data[..., None], batch_size=batch_size, verbose=0)
        out = self._as_volumes(out)
        return out[0] if single else out

    def encode(self, volumes, *, batch_size=1, return_indices=False):
        """Quantized latents of volumes (or their code indices).

        Parameters
        ----------
        volumes : ndarray (X, Y, Z) or (N, X, Y, Z), or list of (X, Y, Z)
            Volumes on the model grid, in [0, 1].
        batch_size : int, optional
        return_indices : bool, optional
            Return the code index of each latent position instead.

        Returns
        -------
        latents : ndarray (N, x, y, z, embedding_dim), float32
            Or ``(N, x, y, z)`` int64 indices; unbatched for one volume.

        Raises
        ------
        ValueError
            Volumes of another shape than the model grid, or with NaN/Inf.
        """
        data, single = as_volume_batch(volumes, self.input_shape)
        z = self.encoder.predict(data[..., None], batch_size=batch_size, verbose=0)
        indices = self.nearest_codes(np.asarray(z, dtype=np.float32))
        out = indices if return_indices else self.quantizer.code_vectors(indices)
        return out[0] if single else out

    def nearest_codes(self, latents):
        """Indices of the nearest code for each latent vector (numpy)."""
        return self.quantizer.codes(latents)

    def decode(self, latents, *, quantize=True, batch_size=1):
        """Volumes from latents.

        Parameters
        ----------
        latents : ndarray (N, x, y, z, embedding_dim) or (x, y, z, embedding_dim)
        quantize : bool, optional
            Snap each latent vector to its nearest code first (default), as
            the decoder was trained on codes only.
        batch_size : int, optional

        Returns
        -------
        volumes : ndarray (N, X, Y, Z) or (X, Y, Z), float32

        Raises
        ------
        ValueError
            Latents of another shape than :attr:`latent_shape` x
            ``embedding_dim``.
        """
        latents = np.asarray(latents, dtype=np.float32)
        expected = (*self.latent_shape, self.embedding_dim)
        single = latents.ndim == 4
        if single:
            latents = latents[None]
        if latents.shape[1:] != expected:
            raise ValueError(
                f"latents should have shape {expected} or (N, *{expected}), "
                f"got {latents.shape}"
            )
        if quantize:
            latents = self.quantizer.snap(latents)
        out = self.decoder.predict(latents, batch_size=batch_size, verbose=0)
        out = self._as_volumes(out)
        return out[0] if single else out

    def _as_volumes(self, network_output):
        out = np.asarray(network_output[..., 0], dtype=np.float32)
        if self.intensity_map is not None:
            out = np.interp(out, *self.intensity_map).astype(np.float32)
        if self.background_threshold is None:
            return out
        return skull_stripped(out, self.background_threshold)

    def calibrate_intensity(self, volumes, *, num_quantiles=511, batch_size=1):
        """Match the intensity distribution of the output to real volumes'.

        An autoencoder trained with L1 places each tissue's intensity well
        but not its spread (the 1.5 mm default model's decoder overshoots
        bright white matter: 95th percentile 1.0 vs 0.95 real). This fits
        the monotone map that sends the quantiles of the reconstructions of
        ``volumes`` (training volumes; every voxel, averaged over volumes)
        to those of the volumes, and applies it to every later
        reconstruction and decoded volume (stored in the model file).

        Parameters
        ----------
        volumes : ndarray (N, X, Y, Z) or list of (X, Y, Z)
            Real volumes on the model grid, in [0, 1].
        num_quantiles : int, optional
            Knots of the map.
        batch_size : int, optional
            Volumes per forward pass.

        Returns
        -------
        intensity_map : ndarray (2, K)
            The knots ``(decoded, real)``, also set as ``intensity_map``.

        Raises
        ------
        ValueError
            Volumes of another shape than the model grid, or with NaN/Inf.
        """
        data, _ = as_volume_batch(volumes, self.input_shape)
        raw = self.network.predict(data[..., None], batch_size=batch_size, verbose=0)
        levels = np.linspace(0, 100, num_quantiles + 2)[1:-1]
        decoded = np.percentile(raw[..., 0].reshape(len(data), -1), levels, axis=1)
        real = np.percentile(data.reshape(len(data), -1), levels, axis=1)
        decoded = np.maximum.accumulate(decoded.mean(axis=1))
        real = np.maximum.accumulate(real.mean(axis=1))
        keep = np.r_[True, np.diff(decoded) > 1e-6]  # np.interp needs increasing x
        self.intensity_map = np.stack([decoded[keep], real[keep]])
        return self.intensity_map

    def random_latents(self, n, *, seed=None):
        """Latents of no brain: codes drawn uniformly at random.

        Decoded, they show what a generator that learned nothing produces
        (pure noise through the VQ-VAE); a baseline for generated samples.
        """
        rng = np.random.default_rng(seed)
        indices = self.quantizer.random_codes((n, *self.latent_shape), rng)
        return self.quantizer.code_vectors(indices)

    def codebook_usage(self, volumes, *, batch_size=1):
        """Usage (fraction of codes chosen) and perplexity on some volumes."""
        indices = self.encode(volumes, batch_size=batch_size, return_indices=True)
        counts = self.quantizer.code_counts(indices)
        usage, perplexity = usage_and_perplexity(counts)
        return {"codebook_usage": usage, "perplexity": perplexity}

    # -------------------------------------------------------------- save/load
    def _file_contents(self):
        return {"config": self.get_config()}, {"vqvae": model_weights(self.network)}

    @classmethod
    def from_config(cls, config, **kwargs):
        """Build an untrained model from :meth:`get_config` output."""
        return cls(**config, **kwargs)

    def file_part(self):
        """Its part of a diffusion model's file: ``(config, weights)``."""
        return self.get_config(), model_weights(self.network)

    @classmethod
    def from_file_part(cls, meta, weights, *, source, mixed_precision=False):
        """Rebuild from :meth:`file_part` (the first-stage interface)."""
        return cls._from_meta(
            {"config": meta},
            {"vqvae": weights},
            source=source,
            mixed_precision=mixed_precision,
        )

    @classmethod
    def _from_meta(cls, meta, weights, *, source, **kwargs):
        try:
            # what files written before an option existed were made with
            model = cls.from_config({**LEGACY_CONFIG, **meta["config"]}, **kwargs)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"the VQVAE3D config in {source} is not valid for this version: {e}"
            ) from e
        assign_weights(model.network, weights.get("vqvae", []), source=source)
        return model
