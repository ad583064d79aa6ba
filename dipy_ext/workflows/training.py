"""dipy_train_vqvae3d and dipy_train_latent_diffusion3d.

Both read T1 files by glob, bring them onto the model grid (cached in the
checkpoint folder, so a resumed run does not preprocess again), hold out a
validation fraction, train with a Keras progress bar, back up the training
state after every epoch (rerun the same command after an interruption and
it resumes), and write the model file and a PNG of the training curves.
"""

from contextlib import contextmanager
import csv
from pathlib import Path
import shutil
import tempfile

from dipy.utils.logging import logger
from dipy.workflows.workflow import Workflow
import numpy as np

from dipy_ext.workflows.base import (
    as_triple,
    check_outputs,
    doc_sections,
    output_dir,
)
from dipy_ext.workflows.checkpoints import (
    claim_folder,
    history_logger,
    read_history,
    run_settings,
    set_aside_corrupt_backups,
)

# the options both training commands end with (doc_sections puts them in)
RUN_OPTIONS_DOC = """\
mixed_precision : bool, optional
    bfloat16 mixed precision.
distribute : string, optional
    Data-parallel training: mirrored (the local GPUs), multi_worker (one
    process per machine, the cluster in TF_CONFIG; only the chief writes
    files, the checkpoint folder must be shared) or data_parallel (JAX
    backend); empty: one device. batch_size is the global batch.
seed : int, optional
    Random seed.
checkpoint_dir : string, optional
    Training state backups; rerunning with the same folder resumes an
    interrupted run (default: <out_dir>/<out_model>.checkpoints).
out_dir : string, optional
    Output folder.
out_model : string, optional
    Model file name.
out_curves : string, optional
    PNG of the training curves.
"""


def _prepare_cohort(input_files, mask_files, grid, reference, cache_folder):
    """Preprocess (or reuse the cache of) a cohort; returns volumes, paths."""
    from dipy_ext.data.io import (
        find_nifti_files,
        load_cohort_cache,
        load_volume,
        preprocess_cohort,
    )

    paths = find_nifti_files(input_files)
    cache = Path(cache_folder) / "cohort.npy"
    if cache.exists() and cache.with_suffix(".json").exists():
        volumes, params = load_cohort_cache(cache)
        if [str(p) for p in paths] == [str(p) for p in _cached_paths(cache)] and (
            tuple(params[0].grid_shape) == tuple(grid["shape"])
        ):
            logger.info(f"Reusing the preprocessed cohort in {cache}")
            return volumes, paths
    if reference:
        grid = {**grid, "reference": load_volume(reference)}
    masks = find_nifti_files(mask_files) if mask_files else None
    Path(cache_folder).mkdir(parents=True, exist_ok=True)
    volumes, _ = preprocess_cohort(paths, masks=masks, cache_file=cache, **grid)
    return volumes, paths


def _cached_paths(cache):
    import json

    return [m["path"] for m in json.loads(cache.with_suffix(".json").read_text())]


class _TrainingRun:
    """What both training workflows do around the fit: outputs, resume, cluster.

    Made first thing in ``run``: the distribution strategy is built before
    anything else runs (TensorFlow accepts a multi-worker strategy only
    then); the model and curves paths are checked against overwriting; the
    checkpoint folder (by default beside the model file, so rerunning the
    same command finds the backup of an interrupted run) is keyed on the
    run's settings. Only the chief of a cluster touches files.
    """

    def __init__(self, arguments, inputs, force):
        self.strategy = _strategy(arguments["distribute"])
        from dipy_ext.nn.distribute import is_chief

        self.chief = is_chief()
        folder = output_dir(arguments["out_dir"])
        self.model_path = folder / arguments["out_model"]
        self.curves_path = folder / arguments["out_curves"]
        check_outputs([self.model_path, self.curves_path], force)
        self.keep_checkpoints = bool(arguments["checkpoint_dir"])
        self.ckpt = (
            Path(arguments["checkpoint_dir"])
            if self.keep_checkpoints
            else folder / f"{arguments['out_model']}.checkpoints"
        )
        if self.chief:
            claim_folder(self.ckpt, run_settings(arguments, inputs=inputs), force)
            set_aside_corrupt_backups(self.ckpt / "backup")

    @contextmanager
    def cache_folder(self):
        """Where the cohort cache goes: the checkpoint folder for the chief,
        a temporary folder (removed after) for another worker of a cluster."""
        if self.chief:
            yield self.ckpt
            return
        with tempfile.TemporaryDirectory() as folder:
            yield Path(folder)

    def fit_options(self):
        """The arguments of ``fit`` that backup, log and distribute the run."""
        return {
            "checkpoint_dir": self.ckpt / "backup",
            # removed by finish() once the model file is written: a failed
            # write (a full disk) loses no training, the rerun just saves
            "keep_backup": True,
            "callbacks": [history_logger(self.ckpt)] if self.chief else [],
            "distribute": self.strategy,
        }

    def finish(self, model, title):
        """Save the model and its training curves (the chief only), remove
        the default checkpoint folder; returns the files written."""
        if not self.chief:
            return []
        model.save(self.model_path)
        history = read_history(self.ckpt)
        if history:
            from dipy_ext.viz import training_curves

            training_curves(history, self.curves_path, title=title)
        else:
            logger.warning("no epoch was run (the checkpoint was already complete)")
        if self.keep_checkpoints:
            shutil.rmtree(self.ckpt / "backup", ignore_errors=True)
        else:
            shutil.rmtree(self.ckpt, ignore_errors=True)
        logger.info(f"Saved {self.model_path} and {self.curves_path}")
        return [str(self.model_path), str(self.curves_path)]


def _strategy(distribute):
    """The distribution strategy ("" or None: none)."""
    from dipy_ext.nn.distribute import make_strategy

    strategy = make_strategy(distribute or None)
    if strategy is not None:
        from dipy_ext.nn.distribute import num_replicas

        logger.info(
            f"Data-parallel training ({distribute}) over "
            f"{num_replicas(strategy)} replicas"
        )
    return strategy


def _split(n, validation_fraction, seed):
    """Shuffled train / validation indices (validation empty if fraction 0)."""
    if not 0 <= validation_fraction < 1:
        raise ValueError(
            f"validation_fraction should be in [0, 1), got {validation_fraction}"
        )
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * validation_fraction))
    if n - n_val < 1:
        raise ValueError(f"{n} volumes leave none for training")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class TrainVQVAE3DFlow(Workflow):
    @classmethod
    def get_short_name(cls):
        return "train_vqvae3d"

    @doc_sections(run_options=RUN_OPTIONS_DOC)
    def run(
        self,
        input_files,
        mask_files="",
        reference="",
        grid_shape=(64, 64, 64),
        voxel_size=(3.0,),
        channels=(32, 64),
        num_res_blocks=(1,),
        no_pixel_shuffle=False,
        quantizer="fsq",
        fsq_levels=(8, 8, 8, 5, 5, 5),
        rvq_stages=2,
        num_embeddings=512,
        embedding_dim=8,
        output_stage="interpolate",
        background_weight=1.0,
        patch_shape=(0,),
        gradient_loss_weight=1.0,
        ssim_loss_weight=0.0,
        adversarial_weight=0.0,
        adversarial_start=-1,
        adversarial_loss="hinge",
        discriminator_learning_rate=1e-4,
        feature_matching=0.0,
        epochs=50,
        batch_size=2,
        learning_rate=1e-3,
        validation_fraction=0.1,
        flip_augment=False,
        mixed_precision=False,
        distribute="",
        seed=0,
        checkpoint_dir="",
        out_dir="",
        out_model="vqvae3d.npz",
        out_curves="vqvae3d_training.png",
    ):
        """Train a 3D VQ-VAE on T1-weighted volumes.

        Parameters
        ----------
        input_files : string
            T1 NIfTI files: a glob (quote it), a folder or a file.
        mask_files : string, optional
            Brain masks (glob), paired with the inputs in sorted order.
        reference : string, optional
            NIfTI volume every input is rigidly registered to first.
        grid_shape : variable int, optional
            Model grid shape (3 ints), each divisible by the compression
            factor (2^levels, or 2^(levels - 1) with no_pixel_shuffle).
        voxel_size : variable float, optional
            Model grid voxel size in mm (one or three values).
        channels : variable int, optional
            Channels per level: (32, 64) compresses 4x per axis,
            (32, 64, 128) 8x.
        num_res_blocks : variable int, optional
            Residual blocks per level (one value or one per level).
        no_pixel_shuffle : bool, optional
            Run the first level at full resolution (slower; the layout of
            models made before pixel shuffling).
        quantizer : string, optional
            fsq (finite scalar quantization: each latent channel rounded to
            a few levels; the default, chosen by benchmark), vq (EMA
            codebook) or rvq (residual VQ).
        fsq_levels : variable int, optional
            Levels per latent channel with fsq (the default: 16 bits in 6
            channels).
        rvq_stages : int, optional
            Codebooks of residual VQ.
        num_embeddings : int, optional
            Codebook size (vq, rvq).
        embedding_dim : int, optional
            Latent channels (vq, rvq; fsq has one per level).
        output_stage : string, optional
            interpolate (trilinear upsampling, then convolutions at full
            resolution: no 2-voxel grid) or subpixel (the layout of models
            made before it, which leaves a grid in trained models).
        background_weight : float, optional
            Loss weight of background voxels.
        patch_shape : variable int, optional
            Train on random crops of this shape (3 ints, multiples of the
            compression factor); 0 trains on whole volumes.
        gradient_loss_weight : float, optional
            Weight of the gradient-difference loss (penalises blur).
        ssim_loss_weight : float, optional
            Weight of the 1 - SSIM loss.
        adversarial_weight : float, optional
            Weight of the PatchGAN adversarial loss (0: none; 0.02-0.05 is a
            start).
        adversarial_start : int, optional
            Reconstruction-only steps before the adversarial loss switches
            on; -1 starts it at a third of the run.
        adversarial_loss : string, optional
            hinge, least_squares or non_saturating.
        discriminator_learning_rate : float, optional
            Learning rate of the discriminator's own optimizer (1e-3 is too
            high: a discriminator learned nothing there).
        feature_matching : float, optional
            Weight of discriminator feature matching (a perceptual loss
            that needs no pretrained network; 0: none).
        epochs : int, optional
            Training epochs.
        batch_size : int, optional
            Volumes per step.
        learning_rate : float, optional
            Adam learning rate.
        validation_fraction : float, optional
            Fraction of volumes held out for validation.
        flip_augment : bool, optional
            Random left-right flips.
        {run_options}
        """
        run = _TrainingRun(
            dict(locals()), [input_files, mask_files, reference], self._force_overwrite
        )
        from dipy_ext.nn.vqvae import VQVAE3D
        from dipy_ext.preprocessing import grid_affine

        shape = as_triple(grid_shape, "grid_shape")
        vox = as_triple(voxel_size, "voxel_size")
        with run.cache_folder() as cache:
            volumes, paths = _prepare_cohort(
                input_files,
                mask_files,
                {"shape": shape, "voxel_size": vox},
                reference,
                cache,
            )
        train, val = _split(len(volumes), validation_fraction, seed)
        logger.info(f"Training on {len(train)} volumes, validating on {len(val)}")
        model = VQVAE3D(
            input_shape=shape,
            channels=channels,
            num_res_blocks=num_res_blocks
            if len(num_res_blocks) > 1
            else num_res_blocks[0],
            pixel_shuffle=not no_pixel_shuffle,
            quantizer=_quantizer_spec(quantizer, fsq_levels, rvq_stages),
            num_embeddings=num_embeddings,
            embedding_dim=embedding_dim,
            output_stage=output_stage,
            background_weight=background_weight,
            affine=grid_affine(shape, vox),
            mixed_precision=mixed_precision,
            seed=seed,
            verbose=True,
        )
        model.fit(
            volumes[train],
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            validation_data=volumes[val] if len(val) else None,
            flip_augment=flip_augment,
            patch_shape=None
            if tuple(patch_shape) == (0,)
            else as_triple(patch_shape, "patch_shape"),
            structure_losses={
                "gradient": gradient_loss_weight,
                "ssim": ssim_loss_weight,
            },
            adversarial_weight=adversarial_weight,
            adversarial_start=None if adversarial_start == -1 else adversarial_start,
            adversarial_loss=adversarial_loss,
            discriminator_learning_rate=discriminator_learning_rate,
            feature_matching=feature_matching,
            **run.fit_options(),
        )
        written = run.finish(model, f"VQVAE3D on {len(train)} volumes")
        if written and len(val):
            _log_heldout(model, volumes[val])
        return written


def _quantizer_spec(kind, fsq_levels, rvq_stages):
    """The quantizer spec of the command's options."""
    if kind == "fsq":
        return {"kind": "fsq", "levels": [int(v) for v in fsq_levels]}
    if kind == "rvq":
        return {"kind": "rvq", "stages": int(rvq_stages)}
    return kind


def _log_heldout(model, volumes):
    """Log how the held-out volumes come back: fidelity, tissue, grid, usage."""
    from dipy_ext.metrics import mean_tissue_dice, psnr, sharpness_ratio, ssim
    from dipy_ext.metrics.spectrum import grid_spikes

    recon = model.predict(volumes)
    usage = model.codebook_usage(volumes)
    dice = mean_tissue_dice(volumes, recon)
    spikes = ", ".join(f"{p}: {v:.2f}" for p, v in grid_spikes(recon).items())
    logger.info(
        f"Held-out ({len(volumes)} volumes): PSNR "
        f"{np.mean([psnr(a, b) for a, b in zip(volumes, recon)]):.2f} dB, SSIM "
        f"{np.mean([ssim(a, b) for a, b in zip(volumes, recon)]):.4f}, tissue Dice "
        f"GM {dice['gm']:.3f} / WM {dice['wm']:.3f}, spectral spikes ({spikes}; "
        f"1 = no grid), sharpness "
        f"ratio {sharpness_ratio(volumes, recon, paired=True):.3f} (1 = as sharp as "
        f"real), codebook usage {usage['codebook_usage']:.0%}, perplexity "
        f"{usage['perplexity']:.1f}"
    )


def read_conditions(path, files, names=None):
    """Conditions per input file from a CSV/TSV with a ``file`` column.

    Every other column is a condition (numeric). Rows are matched to the
    inputs by file name. Returns ``(conditions (N, C), names)``.
    """
    path = Path(path)
    text = path.read_text()
    dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",\t;")
    rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    if not rows or "file" not in rows[0]:
        raise ValueError(f"'{path}' should be a CSV/TSV with a 'file' column")
    names = names or [c for c in rows[0] if c != "file"]
    by_name = {Path(r["file"]).name: r for r in rows}
    out = []
    for f in files:
        row = by_name.get(Path(f).name)
        if row is None:
            raise ValueError(f"'{path}' has no row for {Path(f).name}")
        try:
            out.append([float(row[n]) for n in names])
        except (KeyError, ValueError) as e:
            raise ValueError(
                f"'{path}': bad condition value for {Path(f).name}: {e}"
            ) from e
    return np.asarray(out, np.float32), names


class TrainLatentDiffusion3DFlow(Workflow):
    @classmethod
    def get_short_name(cls):
        return "train_latent_diffusion3d"

    @doc_sections(run_options=RUN_OPTIONS_DOC)
    def run(
        self,
        input_files,
        vqvae_file,
        mask_files="",
        reference="",
        conditions_file="",
        channels=(64, 128, 256),
        attention_levels=(0, 1, 1),
        num_res_blocks=2,
        num_train_timesteps=1000,
        schedule="cosine",
        prediction_type="v",
        epochs=200,
        batch_size=8,
        learning_rate=1e-4,
        ema_momentum=0.999,
        validation_fraction=0.1,
        flip_augment=False,
        mixed_precision=False,
        distribute="",
        seed=0,
        checkpoint_dir="",
        out_dir="",
        out_model="latent_diffusion3d.npz",
        out_curves="latent_diffusion3d_training.png",
    ):
        """Train a latent diffusion model over a trained VQ-VAE's latents.

        The inputs are brought onto the VQ-VAE's grid (shape and voxel size
        read from its file). The output file holds both models and can be
        given to dipy_synthesize_brain.

        Parameters
        ----------
        input_files : string
            T1 NIfTI files: a glob (quote it), a folder or a file.
        vqvae_file : string
            Trained VQVAE3D model file (from dipy_train_vqvae3d).
        mask_files : string, optional
            Brain masks (glob), paired with the inputs in sorted order.
        reference : string, optional
            NIfTI volume every input is rigidly registered to first.
        conditions_file : string, optional
            CSV/TSV with a 'file' column and one numeric column per condition
            (for example age, sex): trains a conditional model.
        channels : variable int, optional
            UNet channels per level.
        attention_levels : variable int, optional
            1 to use self-attention at a level, 0 not to (one per level).
        num_res_blocks : int, optional
            Residual blocks per level.
        num_train_timesteps : int, optional
            Diffusion steps.
        schedule : string, optional
            Beta schedule: cosine, linear or scaled_linear.
        prediction_type : string, optional
            v, epsilon or x0.
        epochs : int, optional
            Training epochs.
        batch_size : int, optional
            Latents per step.
        learning_rate : float, optional
            Adam learning rate.
        ema_momentum : float, optional
            Momentum of the weights' moving average used for sampling.
        validation_fraction : float, optional
            Fraction of volumes held out for validation.
        flip_augment : bool, optional
            Also train on left-right mirrored volumes.
        {run_options}
        """
        run = _TrainingRun(
            dict(locals()),
            [input_files, mask_files, reference, vqvae_file, conditions_file],
            self._force_overwrite,
        )
        from dipy_ext.nn.diffusion import LatentDiffusion3D
        from dipy_ext.nn.vqvae import VQVAE3D

        vq = VQVAE3D.load(vqvae_file, mixed_precision=mixed_precision)
        grid = {"shape": vq.input_shape, "voxel_size": vq.voxel_size}
        with run.cache_folder() as cache:
            volumes, paths = _prepare_cohort(
                input_files, mask_files, grid, reference, cache
            )
        conditions, names = (None, None)
        if conditions_file:
            conditions, names = read_conditions(conditions_file, paths)
        train, val = _split(len(volumes), validation_fraction, seed)
        logger.info(f"Training on {len(train)} volumes, validating on {len(val)}")
        model = LatentDiffusion3D(
            vq,
            channels=channels,
            attention_levels=[bool(a) for a in attention_levels],
            num_res_blocks=num_res_blocks,
            num_train_timesteps=num_train_timesteps,
            schedule=schedule,
            prediction_type=prediction_type,
            condition_dim=0 if conditions is None else conditions.shape[1],
            condition_names=names,
            mixed_precision=mixed_precision,
            seed=seed,
            verbose=True,
        )
        model.fit(
            volumes[train],
            conditions=None if conditions is None else conditions[train],
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            ema_momentum=ema_momentum,
            flip_augment=flip_augment,
            validation_data=volumes[val] if len(val) else None,
            validation_conditions=None
            if conditions is None or not len(val)
            else conditions[val],
            **run.fit_options(),
        )
        return run.finish(model, f"LatentDiffusion3D on {len(train)} volumes")
