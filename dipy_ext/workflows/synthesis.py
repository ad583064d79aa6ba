"""dipy_synthesize_brain: sample synthetic T1 volumes from a trained model."""

from contextlib import ExitStack
import hashlib
from pathlib import Path
import time

from dipy.utils.logging import logger
from dipy.workflows.workflow import Workflow
import numpy as np

from dipy_ext._checks import check_integer
from dipy_ext.workflows.base import (
    output_folder,
    output_lock,
    parse_conditions,
    progress_shown,
    save_nifti_atomic,
)
from dipy_ext.workflows.sample_set import SampleSet, check_prefix, disk_full_message

# a lower bound of a gzipped generated volume's size, for the check before
# sampling (the default model's are about a fifth of the float32 array);
# the measured size of the first volumes written takes over after them
COMPRESSION_BOUND = 10


def _file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _available_memory():
    """Bytes of memory available to a new allocation (None if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_batch_memory(model, batch_size):
    """Refuse a batch whose volumes cannot fit in memory."""
    # the decoder's widest maps at full resolution dominate: measured 200 MB
    # a sample for the default model's 128^3 grid and 32 first channels
    width = getattr(model.vqvae, "channels", (32,))[0]
    per_sample = 4 * int(np.prod(model.output_shape)) * width
    available = _available_memory()
    if available is not None and batch_size * per_sample > available:
        fits = max(1, int(available // per_sample))
        raise ValueError(
            f"--batch_size {batch_size} needs about "
            f"{batch_size * per_sample / 2**30:.1f} GiB of memory, "
            f"{available / 2**30:.1f} GiB is available; use --batch_size {fits} "
            "or less"
        )


def _description(names, values):
    """The covariates of a sample, for the NIfTI description."""
    if values is None:
        return ""
    return " ".join(f"{name}={value:.4g}" for name, value in zip(names, values))


class SynthesizeBrainFlow(Workflow):
    @classmethod
    def get_short_name(cls):
        return "synthesize_brain"

    def run(
        self,
        model_file="",
        num_samples=4,
        seed=0,
        sampler=None,
        num_inference_steps=None,
        eta=None,
        guidance_scale=None,
        conditions=None,
        batch_size=4,
        mixed_precision=False,
        out_dir="",
        out_prefix="synthetic_brain",
        out_mosaic="synthetic_brains.png",
    ):
        """Generate synthetic T1-weighted brain volumes with latent diffusion.

        Writes one NIfTI file per sample, on the model's grid with its
        affine, and a PNG mosaic of mid-slices of the samples. Without
        ``--model_file`` the model embedded in dipy_ext is used: 128^3 at
        1.5 mm in MNI space, trained on deformed variants of the MNI152
        2009 template (not on patients), conditional on two covariates
        measured from each training volume: ``brain_volume`` (ml, training
        range 847 to 1898, mean 1398) and ``ventricle_fraction`` (ventricle
        CSF over brain volume, 0.013 to 0.054, mean 0.029).

        Parameters
        ----------
        model_file : string, optional
            LatentDiffusion3D model file (.npz); default: the embedded model.
        num_samples : int, optional
            Number of volumes to generate.
        seed : int, optional
            Random seed: the same seed gives the same volumes, whatever the
            batch size.
        sampler : string, optional
            'ddim', 'dpm_solver' (DPM-Solver++ 2M: as good in fewer steps)
            or 'ddpm' (ancestral, every training step). Default, as for the
            three options below: the model's recommended setting, stored
            in its file (``dipy_ext.nn.LatentDiffusion3D.sampling``).
        num_inference_steps : int, optional
            Denoising steps (ignored by 'ddpm').
        eta : float, optional
            DDIM stochasticity, 0 (deterministic) to 1 (DDPM-like noise).
        guidance_scale : float, optional
            Classifier-free guidance of a conditional model (1 = none).
        conditions : variable string, optional
            Covariates of a conditional model as name=value pairs, the same
            for every sample; the embedded model takes
            ``brain_volume=<ml> ventricle_fraction=<fraction>`` (training
            ranges above; a request outside them is warned about). Without
            them each sample's covariates are drawn from the training
            distribution; either way they are written in the NIfTI
            description.
        batch_size : int, optional
            Samples denoised together (more is faster, uses more memory).
        mixed_precision : bool, optional
            Compute in bfloat16 (faster on CPUs with AVX512-BF16 or AMX).
        out_dir : string, optional
            Output folder (default: current folder).
        out_prefix : string, optional
            File name prefix; files are ``<prefix>_000.nii.gz``, ...
        out_mosaic : string, optional
            PNG mosaic of mid-slices of the samples (the first 16).
        """
        num_samples = check_integer("--num_samples", num_samples, 1)
        check_integer("--seed", seed, 0)
        batch_size = check_integer("--batch_size", batch_size, 1)
        check_prefix(out_prefix)
        start = time.perf_counter()
        with ExitStack() as stack:
            folder = stack.enter_context(output_folder(out_dir))
            outputs = SampleSet(folder, out_prefix, out_mosaic, num_samples)
            stack.enter_context(output_folder(outputs.mosaic.parent))
            # a second run into the same folder, prefix or mosaic is refused
            for where, name in ((folder, out_prefix), outputs.mosaic_parts):
                stack.enter_context(output_lock(where, name, "dipy_synthesize_brain"))
            outputs.check_outputs(self._force_overwrite)
            path, model, conditions, settings = self._load(
                model_file,
                mixed_precision,
                conditions,
                sampler=sampler,
                num_inference_steps=num_inference_steps,
                eta=eta,
                guidance_scale=guidance_scale,
            )
            _check_batch_memory(model, min(batch_size, num_samples))
            stack.callback(outputs.abandon)  # runs after commit too: a no-op
            # what decides the volumes: a rerun with the same keeps them
            done = outputs.start(
                {
                    "model": _file_digest(path),
                    "mixed_precision": bool(mixed_precision),
                    "seed": seed,
                    "conditions": conditions
                    if conditions is None
                    else conditions.tolist(),
                    **settings,
                }
            )
            self._sample(model, outputs, done, conditions, settings, seed, batch_size)
            self._write_mosaic(outputs, digits=outputs.digits)
            outputs.commit(self._force_overwrite)
        logger.info(
            f"Wrote {num_samples} synthetic volumes ({out_prefix}_*.nii.gz) and "
            f"{out_mosaic} to {folder} in {time.perf_counter() - start:.1f} s"
        )
        return [str(outputs.path(i)) for i in range(num_samples)] + [
            str(outputs.mosaic)
        ]

    def _load(self, model_file, mixed_precision, conditions, **sampling):
        """The model's path, the model, the condition vector asked for
        (None: drawn) and the sampling settings (checked)."""
        from dipy_ext.data.default import default_model_path
        from dipy_ext.nn.diffusion import LatentDiffusion3D

        path = Path(model_file) if model_file else default_model_path()
        start = time.perf_counter()
        model = LatentDiffusion3D.load(path, mixed_precision=mixed_precision)
        condition = parse_conditions(conditions, model.condition_names)
        logger.info(
            f"Loaded {path.name} in {time.perf_counter() - start:.1f} s: grid "
            f"{model.output_shape} at {model.voxel_size[0]:g} mm"
        )
        settings = model.sampling_settings(**sampling)
        logger.info(
            "Sampling with " + ", ".join(f"{k}={v}" for k, v in settings.items())
        )
        return path, model, condition, settings

    def _sample(self, model, outputs, done, condition, settings, seed, batch_size):
        """Draw the samples not staged yet, batch by batch, into staging."""
        done = set(done)
        if done:
            logger.info(f"Kept {len(done)} volumes staged by an earlier run")
        for first in range(0, outputs.num_samples, batch_size):
            todo = [
                i
                for i in range(first, min(first + batch_size, outputs.num_samples))
                if i not in done
            ]
            if not todo:
                continue
            first, n = todo[0], todo[-1] + 1 - todo[0]
            bytes_each = outputs.staged_bytes(done) or (
                4 * np.prod(model.output_shape) / COMPRESSION_BOUND
            )
            outputs.check_space(outputs.num_samples - len(done), bytes_each, len(done))
            cond = None
            if condition is not None:
                cond = np.tile(condition, (n, 1))
            elif model.condition_dim:
                cond = model.sample_conditions(n, seed=seed, first_sample=first)
            # one random stream per sample: same seed, same files, whatever
            # the batch size
            batch = model.predict(
                n,
                conditions=cond,
                **settings,
                seed=seed,
                first_sample=first,
                batch_size=n,
                progress=progress_shown(),
            )
            for k, volume in enumerate(batch):
                row = None if cond is None else cond[k]
                self._save(model, outputs, first + k, volume, row, len(done))
                done.add(first + k)

    def _save(self, model, outputs, i, volume, condition, kept):
        """Stage sample ``i``; a failed write is one line naming its file."""
        path = outputs.staged(i)
        try:
            save_nifti_atomic(
                path,
                volume,
                model.affine,
                space=model.space,
                description=_description(model.condition_names, condition),
            )
        except OSError as e:
            raise ValueError(disk_full_message(e, outputs.path(i), kept)) from e
        logger.info(f"Saved {outputs.name(i)}")

    def _write_mosaic(self, outputs, digits):
        """The mosaic of the first 16 samples, read back from staging."""
        import nibabel as nib

        from dipy_ext.viz import mosaic

        shown = range(min(outputs.num_samples, 16))
        volumes = [np.asarray(nib.load(outputs.staged(i)).dataobj) for i in shown]
        try:
            mosaic(
                volumes,
                outputs.staged_mosaic,
                titles=[f"{i:0{digits}d}" for i in shown],
            )
        except OSError as e:
            raise ValueError(
                disk_full_message(e, outputs.mosaic, outputs.num_samples)
            ) from e
