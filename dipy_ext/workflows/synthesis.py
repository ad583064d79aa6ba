"""dipy_synthesize_brain: sample synthetic T1 volumes from a trained model."""

from pathlib import Path
import time

from dipy.utils.logging import logger
from dipy.workflows.workflow import Workflow
import numpy as np

from dipy_ext.workflows.base import (
    check_outputs,
    output_dir,
    output_lock,
    parse_conditions,
    save_nifti_atomic,
)


def _remove_stale(folder, prefix, num_samples):
    """Remove numbered samples of an earlier, larger run (``--force``), so the
    folder holds one set, not a mix of two."""
    for path in folder.glob(f"{prefix}_*.nii.gz"):
        index = path.name[len(prefix) + 1 : -len(".nii.gz")]
        if index.isdigit() and len(index) >= 3 and int(index) >= num_samples:
            path.unlink()
            logger.info(f"Removed {path.name} of an earlier run (--force)")


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
        if num_samples < 1:
            raise ValueError(f"num_samples should be >= 1, got {num_samples}")
        if batch_size < 1:
            raise ValueError(f"batch_size should be >= 1, got {batch_size}")
        folder = output_dir(out_dir)
        # a second run into the same folder and prefix is refused, not mixed in
        with output_lock(folder, out_prefix, "dipy_synthesize_brain"):
            digits = max(3, len(str(num_samples - 1)))
            nifti_paths = [
                folder / f"{out_prefix}_{i:0{digits}d}.nii.gz"
                for i in range(num_samples)
            ]
            mosaic_path = folder / out_mosaic
            check_outputs([*nifti_paths, mosaic_path], self._force_overwrite)

            from dipy_ext.data.default import default_model_path
            from dipy_ext.nn.diffusion import LatentDiffusion3D
            from dipy_ext.viz import mosaic

            path = Path(model_file) if model_file else default_model_path()
            start = time.perf_counter()
            model = LatentDiffusion3D.load(path, mixed_precision=mixed_precision)
            condition = parse_conditions(conditions, model.condition_names)
            cond_batch = (
                None if condition is None else np.tile(condition, (num_samples, 1))
            )
            logger.info(
                f"Loaded {path.name} in {time.perf_counter() - start:.1f} s: grid "
                f"{model.output_shape} at {model.voxel_size[0]:g} mm"
            )
            settings = model.sampling_settings(
                sampler=sampler,
                num_inference_steps=num_inference_steps,
                eta=eta,
                guidance_scale=guidance_scale,
            )
            logger.info(
                "Sampling with " + ", ".join(f"{k}={v}" for k, v in settings.items())
            )
            if model.condition_dim and cond_batch is None:
                cond_batch = model.sample_conditions(num_samples, seed=seed)

            volumes = []
            for first in range(0, num_samples, batch_size):
                n = min(batch_size, num_samples - first)
                batch = model.predict(
                    n,
                    conditions=None
                    if cond_batch is None
                    else cond_batch[first : first + n],
                    **settings,
                    # one random stream per sample: same seed, same files,
                    # whatever the batch size
                    seed=seed,
                    first_sample=first,
                    batch_size=n,
                )
                for i, volume in enumerate(batch):
                    described = (
                        ""
                        if cond_batch is None
                        else " ".join(
                            f"{name}={value:.4g}"
                            for name, value in zip(
                                model.condition_names, cond_batch[first + i]
                            )
                        )
                    )
                    save_nifti_atomic(
                        nifti_paths[first + i],
                        volume,
                        model.affine,
                        space=model.space,
                        description=described,
                    )
                    logger.info(f"Saved {nifti_paths[first + i]}")
                # only the mosaic's volumes stay in memory
                volumes.extend(batch[: max(0, 16 - len(volumes))])
            if self._force_overwrite:
                _remove_stale(folder, out_prefix, num_samples)
            shown = min(num_samples, 16)
            mosaic(
                volumes[:shown],
                mosaic_path,
                titles=[f"{i:0{digits}d}" for i in range(shown)],
            )
            logger.info(
                f"Wrote {num_samples} synthetic volumes ({out_prefix}_*.nii.gz) and "
                f"{mosaic_path.name} to {folder} in {time.perf_counter() - start:.1f} s"
            )
            return [str(p) for p in nifti_paths] + [str(mosaic_path)]
