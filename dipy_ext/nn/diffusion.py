"""LatentDiffusion3D: a diffusion model over the latents of a frozen VQVAE3D.

``fit`` encodes the training volumes once and normalises the latents: it
subtracts the mean latent of the training set, voxel by voxel, and scales
what remains by 1/std. Brains on a common grid share most of their latent
(the mean brain): in the earlier GSoC attempt and our first experiments the variation
between subjects was under a tenth of the latents' spread, so the noise
buried it within the first few percent of the diffusion steps and the
samples regressed to the mean brain. Centred this way the diffusion models
the variation itself at unit variance, and nothing is ever clipped.
Then it trains a UNet3D denoiser with ``model.fit``:
the timestep, the noise and the condition dropout are drawn inside the
model's ``call`` from a seeded Keras RNG. The optimizer keeps an exponential
moving average of the weights, which Keras copies into the model when
training ends; sampling uses those averaged weights.

``predict`` draws Gaussian latents and runs the reverse process (DDIM by
default, or ancestral DDPM), optionally with classifier-free guidance, then
decodes with the VQ-VAE: volumes on the model grid, in [0, 1].
"""

import inspect

from dipy.utils.logging import logger
import numpy as np

from dipy_ext._checks import check_integer, check_number
from dipy_ext.nn._backend import dtype_policy, keras, ops, seeded
from dipy_ext.nn.distribute import BuiltBeforeFit, make_strategy, strategy_scope
from dipy_ext.nn.first_stage import check_first_stage, first_stage_class
from dipy_ext.nn.inferer import run_sampler
from dipy_ext.nn.model_file import SavedModel, assign_weights, model_weights
from dipy_ext.nn.samplers import Sampler, make_sampler
from dipy_ext.nn.schedules import NoiseSchedule, guided
from dipy_ext.nn.training import (
    ArrayBatches,
    as_volume_batch,
    fit_in_scope,
    learning_rate_schedule,
)
from dipy_ext.nn.unet import build_unet
import dipy_ext.nn.vqvae  # noqa: F401 - registers VQVAE3D, the default first stage

# what predict() does when neither the call nor the model file says otherwise
DEFAULT_SAMPLING = {
    "sampler": "ddim",
    "num_inference_steps": 50,
    "eta": 0.0,
    "guidance_scale": 1.0,
}
# files written before models recorded their sampling settings get those
# dipy_synthesize_brain used then (measured best for the first default model)
LEGACY_SAMPLING = {**DEFAULT_SAMPLING, "num_inference_steps": 200, "eta": 1.0}
SAMPLING_BATCH_SIZE = 4  # samples denoised (and decoded) together
ENCODE_CHUNK = 16  # training volumes read and encoded at a time
# classifier-free guidance far past the usual 1-10 pushes latents out of
# the decoder's range (at 1e30 43% of the voxels clipped): refused
MAX_GUIDANCE = 50.0


def condition_statistics(conditions):
    """Mean, std, covariance, minimum and maximum of each condition column."""
    c = np.asarray(conditions, dtype=np.float64)
    return {
        "mean": c.mean(0).tolist(),
        "std": np.maximum(c.std(0), 1e-6 * (np.abs(c.mean(0)) + 1)).tolist(),
        "covariance": np.atleast_2d(np.cov(c, rowvar=False)).tolist()
        if len(c) > 1
        else np.zeros((c.shape[1],) * 2).tolist(),
        "min": c.min(0).tolist(),
        "max": c.max(0).tolist(),
    }


def _check_condition_stats(stats, names):
    if stats is None:
        return None
    keys = ("mean", "std", "covariance", "min", "max")
    try:
        out = {k: np.asarray(stats[k], dtype=float) for k in keys}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"condition_stats should hold {keys}: {e}") from e
    d = len(names)
    if any(out[k].shape != (d,) for k in keys if k != "covariance") or out[
        "covariance"
    ].shape != (d, d):
        raise ValueError(f"condition_stats should describe {d} conditions {names}")
    return {k: v.tolist() for k, v in out.items()}


class DiffusionTrainer(BuiltBeforeFit, keras.Model):
    """Wraps the UNet for training: noises clean latents inside ``call``.

    ``call`` draws a timestep and noise per sample, asks the UNet for its
    prediction at the noised latents and adds the mean squared error to its
    target as the model's loss (``add_loss``, as the quantizer does), so the
    batches carry no target. Drawing the random numbers in ``call`` keeps the
    RNG state a model variable, so this trains on any Keras backend.
    """

    def __init__(
        self,
        unet,
        schedule,
        *,
        condition_dim=0,
        condition_dropout=0.1,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.unet = unet
        self.schedule = schedule
        self.condition_dim = condition_dim
        self.condition_dropout = condition_dropout
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        x0, condition = inputs if self.condition_dim else (inputs, None)
        x0 = ops.cast(x0, "float32")
        n = ops.shape(x0)[0]
        t = keras.random.randint(
            (n,), 0, self.schedule.num_train_timesteps, seed=self.seed_generator
        )
        noise = keras.random.normal(ops.shape(x0), seed=self.seed_generator)
        args = [self.schedule.q_sample_ops(x0, noise, t), ops.cast(t, "float32")]
        if self.condition_dim:
            drop = keras.random.uniform((n,), seed=self.seed_generator)
            drop = ops.cast(drop < self.condition_dropout, "float32")
            args += [condition, drop]
        prediction = ops.cast(self.unet(args, training=training), "float32")
        target = self.schedule.target_ops(x0, noise, t)
        self.add_loss(ops.mean((prediction - target) ** 2))
        return prediction


class SampleStreams:
    """One numpy Generator per sample, drawn from as one batch.

    ``standard_normal((n, ...))`` stacks one draw of each stream, so a
    sample's noise does not depend on which samples share its batch.
    """

    def __init__(self, generators):
        self.generators = list(generators)

    def __getitem__(self, index):
        return SampleStreams(self.generators[index])

    def standard_normal(self, shape):
        if shape[0] != len(self.generators):
            raise ValueError(
                f"{len(self.generators)} streams for a batch of {shape[0]}"
            )
        return np.stack([g.standard_normal(shape[1:]) for g in self.generators]).astype(
            np.float32
        )


def sample_streams(seed, first, n, *, purpose=0):
    """Streams of samples ``first .. first + n - 1`` of a seed (None: fresh).

    ``purpose`` > 0 gives other streams for the same samples (their
    conditions), which leave the noise streams untouched.
    """
    if isinstance(first, bool) or not isinstance(first, (int, np.integer)) or first < 0:
        raise ValueError(f"first_sample should be an integer >= 0, got {first!r}")
    entropy = np.random.SeedSequence(seed).entropy
    return SampleStreams(
        np.random.default_rng(
            np.random.SeedSequence(
                entropy, spawn_key=(first + i, purpose) if purpose else (first + i,)
            )
        )
        for i in range(n)
    )


class LatentDiffusion3D(SavedModel):
    """Latent diffusion model generating volumes through a trained VQVAE3D."""

    def __init__(
        self,
        vqvae,
        *,
        channels=(64, 128, 256),
        num_res_blocks=2,
        attention_levels=(False, True, True),
        num_heads=1,
        groups=8,
        num_train_timesteps=1000,
        schedule="cosine",
        prediction_type="v",
        condition_dim=0,
        condition_names=None,
        condition_dropout=0.1,
        condition_stats=None,
        sampling=None,
        mixed_precision=False,
        seed=None,
        verbose=True,
    ):
        """Build the denoiser around a trained VQ-VAE.

        Parameters
        ----------
        vqvae : VQVAE3D or another first stage
            Trained autoencoder; it stays frozen. Any class offering the
            interface of :mod:`dipy_ext.nn.first_stage` (encode, decode,
            latent shape, its part of the model file) can stand in.
        channels : tuple of int, optional
            UNet channels per level (``len - 1`` downsamplings of the latent).
        num_res_blocks : int, optional
            Residual blocks per level.
        attention_levels : tuple of bool, optional
            Self-attention at each level (coarse levels are cheap).
        num_heads : int, optional
            Attention heads.
        groups : int, optional
            GroupNormalization groups.
        num_train_timesteps : int, optional
            Diffusion steps T of the training process.
        schedule : {"cosine", "linear", "scaled_linear"}, optional
            Beta schedule.
        prediction_type : {"v", "epsilon", "x0"}, optional
            What the UNet predicts; "v" is the most stable choice.
        condition_dim : int, optional
            Length of the condition vector (0: unconditional).
        condition_names : list of str, optional
            Names of the condition entries (for example ``["age", "sex"]``).
        condition_dropout : float, optional
            Fraction of training samples whose condition is replaced by the
            learned null embedding (enables classifier-free guidance).
        condition_stats : dict, optional
            Mean, standard deviation, covariance, minimum and maximum of
            each condition over the training set (lists); set by the first
            :meth:`fit`. The network sees standardised conditions; requests
            outside [minimum, maximum] get a warning, and a conditional
            model sampled without conditions draws them from a normal with
            this mean and covariance, clipped to the range.
        sampling : dict, optional
            Recommended sampling settings, used wherever :meth:`predict`
            is not told otherwise (and so by ``dipy_synthesize_brain``):
            any of ``sampler``, ``num_inference_steps``, ``eta`` and
            ``guidance_scale``; the rest from :data:`DEFAULT_SAMPLING`.
        mixed_precision : bool, optional
            Run the UNet in bfloat16 (weights stay float32).
        seed : int, optional
            Seeds weights initialisation and the training noise.
        verbose : bool, optional
            Show training progress (default): a Keras progress bar on a
            terminal, one line per epoch when output goes to a file.
        """
        self.vqvae = check_first_stage(vqvae)
        self.channels = tuple(int(c) for c in channels)
        self.num_res_blocks = int(num_res_blocks)
        self.attention_levels = tuple(bool(a) for a in attention_levels)
        self.num_heads = int(num_heads)
        self.groups = int(groups)
        self.schedule = NoiseSchedule(num_train_timesteps, schedule, prediction_type)
        self.condition_dim = int(condition_dim)
        names = list(condition_names or [f"c{i}" for i in range(self.condition_dim)])
        if len(names) != self.condition_dim:
            raise ValueError(
                f"condition_names should have {self.condition_dim} names, got {names}"
            )
        self.condition_names = names
        self.condition_dropout = float(condition_dropout)
        self.condition_stats = _check_condition_stats(condition_stats, names)
        unknown = set(sampling or {}) - set(DEFAULT_SAMPLING)
        if unknown:
            raise ValueError(
                f"sampling takes {sorted(DEFAULT_SAMPLING)}, got {sorted(unknown)}"
            )
        steps = min(DEFAULT_SAMPLING["num_inference_steps"], num_train_timesteps)
        self.sampling = {
            **DEFAULT_SAMPLING,
            "num_inference_steps": steps,  # no more than the model has
            **(sampling or {}),
        }
        self.mixed_precision = bool(mixed_precision)
        self.seed = seed
        self.verbose = verbose
        # set by the first fit: the mean latent of the training set, and
        # 1 / std of the latents once that mean is removed
        self.latent_mean = None
        self.scale_factor = None

        with seeded(seed):
            self.unet = self._build_unet()
            self.trainer = self._make_trainer(self.unet)

    def _build_unet(self):
        return build_unet(
            self.vqvae.latent_shape,
            self.vqvae.embedding_dim,
            channels=self.channels,
            num_res_blocks=self.num_res_blocks,
            attention_levels=self.attention_levels,
            num_heads=self.num_heads,
            groups=self.groups,
            condition_dim=self.condition_dim,
            dtype=dtype_policy(self.mixed_precision),
        )

    def _make_trainer(self, unet):
        return DiffusionTrainer(
            unet,
            self.schedule,
            condition_dim=self.condition_dim,
            condition_dropout=self.condition_dropout,
            seed=self.seed,
        )

    def get_config(self):
        """Architecture and schedule settings (what :meth:`save` stores)."""
        return {
            "channels": list(self.channels),
            "num_res_blocks": self.num_res_blocks,
            "attention_levels": list(self.attention_levels),
            "num_heads": self.num_heads,
            "groups": self.groups,
            **self.schedule.get_config(),
            "condition_dim": self.condition_dim,
            "condition_names": self.condition_names,
            "condition_dropout": self.condition_dropout,
            "condition_stats": self.condition_stats,
            "sampling": self.sampling,
        }

    @property
    def affine(self):
        """Voxel-to-world affine of generated volumes (the model grid)."""
        return self.vqvae.affine

    @property
    def output_shape(self):
        return self.vqvae.input_shape

    @property
    def voxel_size(self):
        """Voxel size (mm) of generated volumes."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def space(self):
        """ "MNI" when generated volumes are in MNI space, else None."""
        return getattr(self.vqvae, "space", None)

    def count_params(self):
        return int(sum(np.prod(v.shape) for v in self.unet.weights))

    # ------------------------------------------------------------ latents
    def _check_conditions(self, conditions, n, name="conditions"):
        if self.condition_dim == 0:
            if conditions is not None:
                raise ValueError(f"this model is unconditional: {name} must be None")
            return None
        if conditions is None:
            raise ValueError(
                f"this model needs {name} of shape (N, {self.condition_dim}) "
                f"({', '.join(self.condition_names)})"
            )
        conditions = np.asarray(conditions, dtype=np.float32)
        if conditions.ndim == 1 and n == 1:
            conditions = conditions[None]
        if conditions.shape != (n, self.condition_dim):
            raise ValueError(
                f"{name} should have shape ({n}, {self.condition_dim}), "
                f"got {conditions.shape}"
            )
        if not np.all(np.isfinite(conditions)):
            raise ValueError(f"{name} contains NaN or Inf values")
        return conditions

    def _standardise(self, conditions):
        """Conditions as the network sees them (zero mean, unit variance)."""
        if self.condition_stats is None:  # files made before conditions were scaled
            return conditions
        mean = np.asarray(self.condition_stats["mean"], np.float32)
        std = np.asarray(self.condition_stats["std"], np.float32)
        return ((conditions - mean) / std).astype(np.float32)

    def _warn_out_of_range(self, conditions):
        if self.condition_stats is None:
            return
        low, high = (np.asarray(self.condition_stats[k]) for k in ("min", "max"))
        for k, name in enumerate(self.condition_names):
            outside = (conditions[:, k] < low[k]) | (conditions[:, k] > high[k])
            if outside.any():
                logger.warning(
                    f"{name}={conditions[outside, k][0]:g} is outside the training "
                    f"range [{low[k]:g}, {high[k]:g}]: the model extrapolates"
                )

    def sampling_settings(self, **given):
        """The sampling settings a call uses: those given (not None), the
        rest from the model's recommended :attr:`sampling`; a bad one gets a
        one-line ValueError naming it."""
        settings = {
            k: default if given.get(k) is None else given[k]
            for k, default in self.sampling.items()
        }
        if not isinstance(settings["sampler"], Sampler):
            make_sampler(
                settings["sampler"], self.schedule, eta=settings["eta"]
            ).set_timesteps(settings["num_inference_steps"])
        check_number("guidance_scale", settings["guidance_scale"], 0.0, MAX_GUIDANCE)
        if settings["guidance_scale"] != 1.0 and self.condition_dim == 0:
            raise ValueError("guidance_scale != 1 needs a conditional model")
        return settings

    def sample_conditions(self, num_samples, *, seed=None, first_sample=0):
        """Conditions drawn from the training distribution (a conditional model).

        A normal with the training mean and covariance, clipped to the
        training range; sample ``i`` of a seed always gets the same draw, so
        ``predict(n, seed=s)`` without conditions uses exactly these.

        Returns
        -------
        conditions : ndarray (num_samples, condition_dim), float32
        """
        if self.condition_dim == 0:
            raise ValueError("this model is unconditional: it has no conditions")
        if self.condition_stats is None:
            raise ValueError(
                "this model file does not record its training conditions: "
                "pass conditions"
            )
        stats = {k: np.asarray(v) for k, v in self.condition_stats.items()}
        streams = sample_streams(seed, first_sample, num_samples, purpose=1)
        out = np.stack(
            [
                g.multivariate_normal(stats["mean"], stats["covariance"])
                for g in streams.generators
            ]
        )
        return np.clip(out, stats["min"], stats["max"]).astype(np.float32)

    def encode(self, volumes, *, batch_size=2):
        """Normalised latents of volumes (what the diffusion model works on)."""
        if self.scale_factor is None:
            raise ValueError("the latent scale is unknown: fit the model first")
        z = self.vqvae.encode(volumes, batch_size=batch_size)
        return ((z - self.latent_mean) * self.scale_factor).astype(np.float32)

    def decode(self, latents, *, batch_size=2):
        """Volumes in [0, 1] from normalised latents."""
        z = np.asarray(latents, np.float32) / self.scale_factor + self.latent_mean
        return np.clip(self.vqvae.decode(z, batch_size=batch_size), 0.0, 1.0)

    # --------------------------------------------------------------- train
    def fit(
        self,
        volumes,
        *,
        conditions=None,
        epochs=100,
        batch_size=8,
        learning_rate=1e-4,
        ema_momentum=0.999,
        flip_augment=False,
        validation_data=None,
        validation_conditions=None,
        callbacks=None,
        checkpoint_dir=None,
        keep_backup=False,
        distribute=None,
    ):
        """Train the denoiser on volumes already on the model grid.

        Parameters
        ----------
        volumes : ndarray (N, X, Y, Z) or list
            Training volumes in [0, 1]; encoded once, a few at a time (a
            memory map is read from disk as it is encoded, and a mirrored
            copy is never made: training holds the latents, not the
            volumes).
        conditions : ndarray (N, condition_dim), optional
            Required by conditional models, refused by unconditional ones.
        epochs : int, optional
        batch_size : int, optional
        learning_rate : float, optional
            Peak Adam learning rate (linear warm-up, then cosine decay).
        ema_momentum : float or None, optional
            Momentum of the weights' moving average used for sampling (about
            ``1 / (1 - ema_momentum)`` steps are averaged); None disables it.
        flip_augment : bool, optional
            Also train on left-right mirrored volumes (first axis).
        validation_data, validation_conditions : optional
            Held-out volumes (and conditions) for a ``val_loss``.
        callbacks : list of keras.callbacks.Callback, optional
        checkpoint_dir : str or Path, optional
            Back up the training state each epoch; a rerun resumes from it.
        keep_backup : bool, optional
            Keep the backup once training completes (by default it is
            removed): a caller that removes it after writing the model file
            loses no training if that write fails.
        distribute : str or strategy, optional
            Data-parallel training, as for :meth:`VQVAE3D.fit`
            (:mod:`dipy_ext.nn.distribute`); ``batch_size`` is the global
            batch. The weights' moving average lives in the optimizer,
            mirrored like the weights.

        Returns
        -------
        history : keras.callbacks.History
            Per-epoch ``loss`` (and ``val_loss``).

        Raises
        ------
        ValueError
            Volumes of the wrong shape or with NaN/Inf; conditions missing,
            of the wrong shape or given to an unconditional model; an
            unknown ``distribute``; a loss that becomes NaN (nothing saved).
        """
        train = self._training_batches(volumes, conditions, batch_size, flip_augment)
        val = None
        if validation_data is not None:
            val = self._validation_batches(
                validation_data, validation_conditions, batch_size
            )
        strategy = make_strategy(distribute)
        with strategy_scope(strategy):
            # a strategy's variables are made in its scope: train a copy there
            trainer = self.trainer
            if strategy is not None:
                trainer = self._make_trainer(self._build_unet())
                trainer.unet.set_weights(self.unet.get_weights())
            if not trainer.built:  # BackupAndRestore needs built variables
                trainer(train[0][0])
            trainer.compile(
                optimizer=keras.optimizers.Adam(
                    learning_rate_schedule(learning_rate, epochs * len(train)),
                    use_ema=ema_momentum is not None,
                    ema_momentum=0.99 if ema_momentum is None else ema_momentum,
                ),
            )
        history = fit_in_scope(
            trainer,
            train,
            epochs=epochs,
            validation_data=val,
            callbacks=callbacks,
            checkpoint_dir=checkpoint_dir,
            keep_backup=keep_backup,
            strategy=strategy,
            verbose=self.verbose,
        )
        if trainer is not self.trainer:  # the averaged weights, back home
            self.unet.set_weights(trainer.unet.get_weights())
        return history

    def _training_batches(self, volumes, conditions, batch_size, flip_augment):
        """Batches of normalised latents (the volumes encoded once) and
        standardised conditions; sets the latents' normalisation on a first
        fit."""
        data, _ = as_volume_batch(volumes, self.vqvae.input_shape)
        conditions = self._check_conditions(conditions, len(data))
        if conditions is not None:
            if self.condition_stats is None:
                self.condition_stats = condition_statistics(conditions)
            conditions = self._standardise(conditions)
        raw = self._encode_in_chunks(data, batch_size, flip_augment)
        if flip_augment and conditions is not None:
            conditions = np.concatenate([conditions, conditions])
        if self.scale_factor is None:
            self.latent_mean = raw.mean(axis=0).astype(np.float32)
            self.scale_factor = float(1.0 / ((raw - self.latent_mean).std() + 1e-8))
        latents = ((raw - self.latent_mean) * self.scale_factor).astype(np.float32)
        return ArrayBatches(
            latents, batch_size, seed=self.seed, conditions=conditions, targets=False
        )

    def _encode_in_chunks(self, volumes, batch_size, flip_augment):
        """Raw latents of the volumes, then of their mirror images if asked.

        A few volumes are read and encoded at a time, so that neither a
        copy of the whole set nor its mirrored copy is ever held (a memory
        map stays on disk): training memory is that of the latents."""
        chunk = batch_size * max(1, ENCODE_CHUNK // batch_size)
        views = [lambda v: v] + ([lambda v: v[:, ::-1]] if flip_augment else [])
        return np.concatenate(
            [
                self.vqvae.encode(
                    view(np.asarray(volumes[i : i + chunk], np.float32)),
                    batch_size=batch_size,
                )
                for view in views
                for i in range(0, len(volumes), chunk)
            ]
        )

    def _validation_batches(self, volumes, conditions, batch_size):
        """Batches of held-out latents and conditions, in order."""
        volumes, _ = as_volume_batch(
            volumes, self.vqvae.input_shape, name="validation_data"
        )
        conditions = self._check_conditions(
            conditions, len(volumes), "validation_conditions"
        )
        if conditions is not None:
            conditions = self._standardise(conditions)
        return ArrayBatches(
            self.encode(volumes),
            batch_size,
            shuffle=False,
            conditions=conditions,
            targets=False,
        )

    # -------------------------------------------------------------- sample
    def _model_output(self, x, t, conditions, guidance_scale):
        """Network output at ``x`` (numpy), with classifier-free guidance."""
        n = len(x)
        tt = np.full((n,), t, np.float32)
        if conditions is None:
            out = self.unet.predict_on_batch([x, tt])
            return np.asarray(out, np.float32)
        if guidance_scale == 1.0:
            out = self.unet.predict_on_batch(
                [x, tt, conditions, np.zeros(n, np.float32)]
            )
            return np.asarray(out, np.float32)
        both = self.unet.predict_on_batch(
            [
                np.concatenate([x, x]),
                np.concatenate([tt, tt]),
                np.concatenate([conditions, conditions]),
                np.concatenate([np.zeros(n, np.float32), np.ones(n, np.float32)]),
            ]
        )
        both = np.asarray(both, np.float32)
        return guided(both[:n], both[n:], guidance_scale)

    def sample_latents(
        self,
        num_samples,
        *,
        conditions=None,
        num_inference_steps=None,
        sampler=None,
        eta=None,
        guidance_scale=None,
        seed=None,
        first_sample=0,
        batch_size=SAMPLING_BATCH_SIZE,
        progress=True,
    ):
        """Normalised latents drawn by the reverse diffusion process.

        Arguments and errors as for :meth:`predict`.

        Returns
        -------
        latents : ndarray (num_samples, x, y, z, embedding_dim), float32
            In the diffusion model's normalised latent space
            (:meth:`decode` turns them into volumes).
        """
        check_integer("num_samples", num_samples, 1)
        if self.scale_factor is None:
            raise ValueError("this model is not trained: fit it (or load one) first")
        sampler, num_inference_steps, eta, guidance_scale = self.sampling_settings(
            sampler=sampler,
            num_inference_steps=num_inference_steps,
            eta=eta,
            guidance_scale=guidance_scale,
        ).values()
        conditions = self._sampling_conditions(
            conditions, num_samples, seed, first_sample
        )
        if not isinstance(sampler, Sampler):
            sampler = make_sampler(sampler, self.schedule, eta=eta)
        streams = sample_streams(seed, first_sample, num_samples)
        shape = (*self.vqvae.latent_shape, self.vqvae.embedding_dim)
        noise = streams.standard_normal((num_samples, *shape))

        def denoise(x, t, batch):
            cond = None if conditions is None else conditions[batch]
            return self._model_output(x, t, cond, guidance_scale)

        return run_sampler(
            sampler,
            denoise,
            noise,
            streams,
            num_inference_steps=num_inference_steps,
            batch_size=batch_size,
            progress=progress,
        )

    def _sampling_conditions(self, conditions, num_samples, seed, first_sample):
        """Standardised conditions for a draw (drawn from the training
        distribution when none are given); None for an unconditional model."""
        if conditions is None and self.condition_dim:
            conditions = self.sample_conditions(
                num_samples, seed=seed, first_sample=first_sample
            )
        conditions = self._check_conditions(conditions, num_samples)
        if conditions is not None:
            self._warn_out_of_range(conditions)
            conditions = self._standardise(conditions)
        return conditions

    def predict(self, num_samples, **options):
        """Generate volumes.

        Parameters
        ----------
        num_samples : int
            How many volumes.
        conditions : ndarray (num_samples, condition_dim), optional
            Conditions of a conditional model (in the units of
            :attr:`condition_names`); default: drawn from the training
            distribution (:meth:`sample_conditions`).
        num_inference_steps : int, optional
            Network evaluations (ignored by DDPM, which takes every
            training step).
        sampler : {"ddim", "dpm_solver", "ddpm"} or Sampler, optional
            How the reverse process is solved (:mod:`dipy_ext.nn.samplers`):
            DPM-Solver++(2M) matches DDIM's quality in far fewer steps.
        eta : float, optional
            DDIM stochasticity (0: deterministic; used by DDIM only).
        guidance_scale : float, optional
            Classifier-free guidance (1: none; > 1 follows the condition more).

            ``num_inference_steps``, ``sampler``, ``eta`` and
            ``guidance_scale`` default to the model's recommended settings
            (:attr:`sampling`, stored in its file).
        seed : int, optional
            Same seed, same volumes, whatever ``batch_size``: each sample
            has its own random stream, derived from the seed and its index.
        first_sample : int, optional
            Index of the first sample in the seed's sequence, to draw a long
            run in pieces: ``predict(4, seed=s, first_sample=4)`` gives
            samples 4-7 of ``predict(8, seed=s)``.
        batch_size : int, optional
            Samples denoised together.
        progress : bool, optional
            Progress bar over the denoising steps.

        Returns
        -------
        volumes : ndarray (num_samples, X, Y, Z), float32 in [0, 1]
            On the model grid (affine :attr:`affine`).

        Raises
        ------
        ValueError
            An untrained model; a bad ``num_samples``, sampler name, number
            of steps, ``eta`` or ``guidance_scale`` (not finite, negative,
            or guidance on an unconditional model); conditions of the wrong
            shape, with NaN/Inf, or given to an unconditional model.
        """
        latents = self.sample_latents(num_samples, **options)
        batch_size = options.get("batch_size", SAMPLING_BATCH_SIZE)
        return self.decode(latents, batch_size=batch_size)

    # help() and IDEs show predict's options: sample_latents' signature, once
    predict.__signature__ = inspect.signature(sample_latents)

    # ----------------------------------------------------------- save/load
    def _file_contents(self):
        if self.scale_factor is None:
            raise ValueError("this model is not trained: nothing worth saving")
        first_meta, first_weights = self.vqvae.file_part()
        meta = {
            "config": self.get_config(),
            "first_stage": type(self.vqvae).__name__,
            "vqvae_config": first_meta,  # the name from before other first stages
            "scale_factor": self.scale_factor,
        }
        weights = {
            "vqvae": first_weights,
            "unet": model_weights(self.unet),
            "latent_mean": [self.latent_mean],
        }
        return meta, weights

    @classmethod
    def _from_meta(cls, meta, weights, *, source, mixed_precision, verbose):
        first_stage = first_stage_class(meta.get("first_stage", "VQVAE3D"), source)
        vq = first_stage.from_file_part(
            meta.get("vqvae_config", {}),
            weights.get("vqvae", []),
            source=source,
            mixed_precision=mixed_precision,
        )
        try:
            config = {"sampling": LEGACY_SAMPLING, **meta["config"]}
            model = cls(vq, **config, mixed_precision=mixed_precision, verbose=verbose)
            model.scale_factor = float(meta["scale_factor"])
            model.latent_mean = np.asarray(weights["latent_mean"][0], np.float32)
            expected = (*vq.latent_shape, vq.embedding_dim)
            if model.latent_mean.shape != expected:
                raise ValueError(
                    f"latent mean has shape {model.latent_mean.shape}, the VQ-VAE "
                    f"makes {expected}"
                )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"the LatentDiffusion3D config in {source} is not valid for this "
                f"version: {e}"
            ) from e
        assign_weights(model.unet, weights.get("unet", []), source=source)
        return model
