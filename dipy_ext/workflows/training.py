"""dipy_train_vqvae3d and dipy_train_latent_diffusion3d.

Both read T1 files by glob, bring them onto the model grid (cached in the
checkpoint folder, so a resumed run does not preprocess again), hold out a
validation fraction, train with a Keras progress bar, back up the training
state after every epoch (rerun the same command after an interruption and
it resumes), and write the model file and a PNG of the training curves.
"""

import csv
from pathlib import Path

from dipy.utils.logging import logger
from dipy.workflows.workflow import Workflow
import numpy as np

from dipy_ext._checks import check_integer, check_number
from dipy_ext.workflows.base import as_triple, doc_sections, progress_shown
from dipy_ext.workflows.training_run import TrainingRun, records_options

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


def _check_run_options(o):
    """The options both commands share, checked before any work."""
    check_integer("--seed", o.seed, 0)
    check_integer("--epochs", o.epochs, 1)
    check_integer("--batch_size", o.batch_size, 1)
    check_number("--learning_rate", o.learning_rate)
    fraction = o.validation_fraction
    check_number("--validation_fraction", fraction, 0.0, 1.0)
    if fraction == 1:
        raise ValueError("--validation_fraction should be below 1, got 1")


class TrainVQVAE3DFlow(Workflow):
    @classmethod
    def get_short_name(cls):
        return "train_vqvae3d"

    @records_options
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
        o = self.options
        _check_run_options(o)
        fit_options = _vqvae_fit_options(o)
        inputs = [input_files, mask_files, reference]
        with TrainingRun(o, inputs, self._force_overwrite, "dipy_train_vqvae3d") as run:
            model = _vqvae(o)  # its options are checked before any work
            model.check_patch_shape(fit_options["patch_shape"])
            run.claim()
            volumes, _ = run.cohort(
                {"shape": model.input_shape, "voxel_size": model.voxel_size}
            )
            train, val = run.split(len(volumes))
            model.fit(
                volumes[train],
                validation_data=volumes[val] if len(val) else None,
                **fit_options,
                **run.fit_options(),
            )
            written = run.finish(model, f"VQVAE3D on {len(train)} volumes")
        if written and len(val):
            _log_heldout(model, volumes[val])
        return written


def _vqvae(o):
    """The VQVAE3D the options of dipy_train_vqvae3d describe."""
    from dipy_ext.nn.vqvae import VQVAE3D
    from dipy_ext.preprocessing import grid_affine

    shape = as_triple(o.grid_shape, "grid_shape")
    vox = as_triple(o.voxel_size, "voxel_size")
    if not all(np.isfinite(v) and v > 0 for v in vox):
        raise ValueError(f"--voxel_size should be positive numbers, got {vox}")
    blocks = o.num_res_blocks
    return VQVAE3D(
        input_shape=shape,
        channels=o.channels,
        num_res_blocks=blocks if len(blocks) > 1 else blocks[0],
        pixel_shuffle=not o.no_pixel_shuffle,
        quantizer=_quantizer_option(o.quantizer, o.fsq_levels, o.rvq_stages),
        num_embeddings=o.num_embeddings,
        embedding_dim=o.embedding_dim,
        output_stage=o.output_stage,
        background_weight=o.background_weight,
        affine=grid_affine(shape, vox),
        mixed_precision=o.mixed_precision,
        seed=o.seed,
        verbose=progress_shown(),
    )


def _vqvae_fit_options(o):
    """The arguments of ``VQVAE3D.fit`` from the options, checked."""
    for name in ("gradient_loss_weight", "ssim_loss_weight", "adversarial_weight"):
        check_number(f"--{name}", getattr(o, name))
    check_number("--discriminator_learning_rate", o.discriminator_learning_rate)
    check_number("--feature_matching", o.feature_matching)
    check_integer("--adversarial_start", o.adversarial_start, -1)
    from dipy_ext.nn.discriminator import adversarial_losses

    adversarial_losses(o.adversarial_loss)
    patch = None
    if tuple(o.patch_shape) != (0,):
        patch = as_triple(o.patch_shape, "patch_shape")
    return {
        "epochs": o.epochs,
        "batch_size": o.batch_size,
        "learning_rate": o.learning_rate,
        "flip_augment": o.flip_augment,
        "patch_shape": patch,
        "structure_losses": {
            "gradient": o.gradient_loss_weight,
            "ssim": o.ssim_loss_weight,
        },
        "adversarial_weight": o.adversarial_weight,
        "adversarial_start": None if o.adversarial_start == -1 else o.adversarial_start,
        "adversarial_loss": o.adversarial_loss,
        "discriminator_learning_rate": o.discriminator_learning_rate,
        "feature_matching": o.feature_matching,
    }


def _quantizer_option(kind, fsq_levels, rvq_stages):
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

    @records_options
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
        o = self.options
        _check_run_options(o)
        ema = check_number("--ema_momentum", o.ema_momentum, 0.0, 1.0)
        inputs = [input_files, mask_files, reference, vqvae_file, conditions_file]
        with TrainingRun(
            o, inputs, self._force_overwrite, "dipy_train_latent_diffusion3d"
        ) as run:
            from dipy_ext.nn.vqvae import VQVAE3D

            vq = VQVAE3D.load(vqvae_file, mixed_precision=mixed_precision)
            model = _latent_diffusion(o, vq, len(_condition_names(conditions_file)))
            run.claim()
            grid = {"shape": vq.input_shape, "voxel_size": vq.voxel_size}
            volumes, paths = run.cohort(grid)
            conditions = None
            if conditions_file:
                conditions, _ = read_conditions(conditions_file, paths)
            train, val = run.split(len(volumes))
            model.fit(
                volumes[train],
                conditions=None if conditions is None else conditions[train],
                epochs=epochs,
                batch_size=batch_size,
                learning_rate=learning_rate,
                ema_momentum=ema,
                flip_augment=flip_augment,
                validation_data=volumes[val] if len(val) else None,
                validation_conditions=None
                if conditions is None or not len(val)
                else conditions[val],
                **run.fit_options(),
            )
            return run.finish(model, f"LatentDiffusion3D on {len(train)} volumes")


def _condition_names(conditions_file):
    """The condition columns of a conditions file ([] without one)."""
    if not conditions_file:
        return []
    return read_conditions(conditions_file, [])[1]


def _latent_diffusion(o, vq, condition_dim):
    """The LatentDiffusion3D the options of dipy_train_latent_diffusion3d
    describe, over ``vq``."""
    from dipy_ext.nn.diffusion import LatentDiffusion3D

    return LatentDiffusion3D(
        vq,
        channels=o.channels,
        attention_levels=[bool(a) for a in o.attention_levels],
        num_res_blocks=o.num_res_blocks,
        num_train_timesteps=o.num_train_timesteps,
        schedule=o.schedule,
        prediction_type=o.prediction_type,
        condition_dim=condition_dim,
        condition_names=_condition_names(o.conditions_file) or None,
        mixed_precision=o.mixed_precision,
        seed=o.seed,
        verbose=progress_shown(),
    )
