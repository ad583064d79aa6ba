"""
===============================================================
Generating brains with latent diffusion (phantoms, on a CPU)
===============================================================

:class:`~dipy_ext.nn.diffusion.LatentDiffusion3D` learns to generate the
latents of a trained :class:`~dipy_ext.nn.vqvae.VQVAE3D`; the VQ-VAE decoder
turns generated latents into volumes. Here both are trained on phantoms of
two families (small and large ventricles) at 32^3, in a few minutes on a
CPU, and we check what matters: the samples are brains (close to training
volumes, far from decoded noise), both families appear, and no sample is a
copy of a training volume.

To scale up: a 64^3 or 128^3 grid of real T1 volumes, UNet channels
``(64, 128, 256)``, thousands of training steps (a GPU helps), DDIM 50-100.
"""

import numpy as np

from dipy_ext.data import phantom_cohort, phantom_family
from dipy_ext.metrics import diversity, volume_distances
from dipy_ext.nn.diffusion import LatentDiffusion3D
from dipy_ext.nn.vqvae import VQVAE3D
from dipy_ext.viz import mosaic, training_curves

###############################################################################
# 32 training phantoms, alternating families; a smooth cortex
# (``folding=0.3``) because 32^3 cannot resolve folds anyway.

shape = (32, 32, 32)
families = np.tile([0, 1], 16)
train = phantom_cohort(32, shape, rng=0, atrophy=families, folding=0.3)

###############################################################################
# First the autoencoder: 8^3 x 4 latents, 128 codes.

vq = VQVAE3D(
    input_shape=shape,
    channels=(16, 32),
    num_res_blocks=1,
    quantizer="vq",
    output_stage="subpixel",
    num_embeddings=128,
    embedding_dim=4,
    seed=0,
)
vq.fit(
    train,
    epochs=30,
    batch_size=4,
    learning_rate=2e-3,
    flip_augment=True,
    structure_losses={},  # L1 alone: the recipe this small example was tuned with
)

###############################################################################
# Then the diffusion model on the latents. ``fit`` encodes the volumes once,
# subtracts the mean latent (voxel by voxel) and scales the rest to unit
# variance: the diffusion then models how brains differ from the mean
# brain. v-prediction, cosine schedule, 1000 steps; the optimizer keeps a
# moving average of the weights that sampling uses.

ldm = LatentDiffusion3D(
    vq,
    channels=(32, 64, 64),
    attention_levels=(False, True, True),
    num_res_blocks=1,
    seed=0,
)
history = ldm.fit(
    train,
    epochs=200,
    batch_size=16,
    learning_rate=5e-4,
    ema_momentum=0.99,
    flip_augment=True,
)
training_curves(history, "ldm_training.png", title="latent diffusion on phantoms")

###############################################################################
# Sample 16 volumes with 50 DDIM steps (deterministic given the seed).

samples = ldm.predict(16, num_inference_steps=50, seed=2024)
mosaic(
    list(samples[:8]) + list(train[:4]),
    "ldm_samples_vs_training.png",
    titles=[f"sample {i}" for i in range(8)] + [f"training {i}" for i in range(4)],
)

###############################################################################
# The numbers. Decoded noise is what a diffusion model that never learned
# produces (the seed project's failure): its nearest training volume is far.

noise = vq.decode(vq.random_latents(8, seed=0))
renderings = vq.predict(train)  # the training set as the decoder renders it
nn_samples = volume_distances(samples, train).min(axis=1)
nn_noise = volume_distances(noise, train).min(axis=1)
print(
    f"nearest training volume (RMS): samples {np.median(nn_samples):.3f}, "
    f"decoded noise {np.median(nn_noise):.3f}"
)
large = phantom_family(samples, train, families).mean()
print(f"large-ventricle family: samples {large:.0%}, training {families.mean():.0%}")
print(
    "diversity (MS-SSIM, lower = more diverse): "
    f"samples {diversity(samples)[0]:.3f}, "
    f"training renderings {diversity(renderings[:16])[0]:.3f}, "
    f"noise {diversity(noise)[0]:.3f}"
)
nn_copy = volume_distances(samples, renderings).min(axis=1)
print(
    f"closest sample to a training rendering: {nn_copy.min():.4f} "
    f"(closest pair of training renderings: "
    f"{volume_distances(renderings).min():.4f})"
)
