"""
===========================================================
The default model: brains of a requested size at 1.5 mm
===========================================================

dipy_ext embeds a trained :class:`~dipy_ext.nn.diffusion.LatentDiffusion3D`
(128^3 voxels of 1.5 mm in MNI space) that ``dipy_synthesize_brain`` uses
when no model file is given. It is conditional on two covariates measured
from each of its training volumes: the brain volume (ml) and the ventricle
fraction (ventricle CSF over the brain volume). Here we ask it for small
and large brains with small and large ventricles, measure what it made
with the same measurement, and save the samples as NIfTI files in MNI
space.

It is a model of one brain, the MNI152 template, varied by simulated
anatomy and scanner effects, not of a population: see the model card.
"""

import nibabel as nib
import numpy as np

from dipy_ext.data.default import default_model_path
from dipy_ext.metrics.covariates import measure_covariates
from dipy_ext.nn.diffusion import LatentDiffusion3D
from dipy_ext.viz import mosaic

###############################################################################
# The model file carries the covariates' names, their training ranges and
# the recommended sampling settings (DPM-Solver++, 25 steps).

ldm = LatentDiffusion3D.load(default_model_path())
stats = ldm.condition_stats
for name, low, high in zip(ldm.condition_names, stats["min"], stats["max"]):
    print(f"{name}: trained on {low:.3f} to {high:.3f}")
print("sampling:", ldm.sampling)

###############################################################################
# Four requests inside the training ranges, one sample each.

requests = np.array(
    [[1100, 0.02], [1100, 0.045], [1650, 0.02], [1650, 0.045]], np.float32
)
samples = ldm.predict(len(requests), conditions=requests, seed=0)
measured = measure_covariates(samples, ldm.vqvae.voxel_size)
for (volume, fraction), (got_volume, got_fraction) in zip(requests, measured):
    print(
        f"asked {volume:.0f} ml, ventricles {fraction:.3f}; "
        f"measured {got_volume:.0f} ml, ventricles {got_fraction:.3f}"
    )

###############################################################################
# Mid-slices of the four samples.

mosaic(
    samples,
    "default_model_requests.png",
    titles=[f"{v:.0f} ml, {f:.3f}" for v, f in requests],
)

###############################################################################
# Each sample is a volume on the model grid; its affine places it in MNI
# space (``sform_code`` 4, as ``dipy_synthesize_brain`` writes it).

image = nib.Nifti1Image(samples[0], ldm.vqvae.affine)
image.set_sform(ldm.vqvae.affine, code=4)
image.set_qform(ldm.vqvae.affine, code=4)
image.header.set_xyzt_units("mm")
nib.save(image, "default_model_sample.nii.gz")
print(nib.load("default_model_sample.nii.gz").header.get_zooms())
