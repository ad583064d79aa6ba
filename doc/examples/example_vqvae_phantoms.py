"""
=====================================================
Compressing brain volumes with a 3D VQ-VAE (phantoms)
=====================================================

A VQ-VAE encodes a volume into a small grid of vectors, replaces each
vector by its nearest entry of a learned codebook, and decodes the result
back into a volume. Here we train :class:`~dipy_ext.nn.vqvae.VQVAE3D` on
synthetic head phantoms at 32^3, small enough for a CPU in a few minutes,
and look at the reconstructions of phantoms it has never seen.

To scale up: 64^3 or 128^3 grids of real T1 volumes (see
``dipy_train_vqvae3d``), more epochs, ``channels=(32, 64, 128)``.
"""

import numpy as np

from dipy_ext.data import phantom_cohort
from dipy_ext.metrics import psnr, sharpness_ratio, ssim
from dipy_ext.nn.vqvae import VQVAE3D
from dipy_ext.viz import comparison, training_curves

###############################################################################
# Training and held-out phantoms: skull-stripped, T1-like contrast, random
# smooth deformations, two families of ventricle size (``atrophy``).

shape = (32, 32, 32)
train = phantom_cohort(48, shape, rng=0, atrophy=np.linspace(0, 1, 48))
heldout = phantom_cohort(4, shape, rng=1000, atrophy=[0, 0.3, 0.7, 1])

###############################################################################
# The encoder first folds each 2x2x2 block of voxels into channels (pixel
# shuffling: no layer works at full resolution, which keeps training fast),
# then halves the grid once between its two levels: 8^3 latents of 8
# channels, quantized against 256 codes. The codebook is updated by moving
# averages, and codes nobody uses are restarted on encoder outputs.

vq = VQVAE3D(
    input_shape=shape,
    channels=(32, 64),
    num_res_blocks=(2, 2),
    quantizer="vq",
    output_stage="subpixel",
    num_embeddings=256,
    embedding_dim=8,
    seed=0,
)
###############################################################################
# Besides the L1 error, a gradient-difference loss penalises blurred edges,
# and from epoch 10 on a small 3D PatchGAN discriminator is trained to tell
# reconstructed from real patches while the autoencoder learns to fool it
# (the discriminator is used for training only: it is not in the model
# file).

steps_per_epoch = len(train) // 4
history = vq.fit(
    train,
    epochs=30,
    batch_size=4,
    learning_rate=1e-3,
    flip_augment=True,
    structure_losses={"gradient": 1.0},
    adversarial_weight=0.05,
    adversarial_start=10 * steps_per_epoch,
)
training_curves(history, "vqvae_training.png", title="VQ-VAE on phantoms")

###############################################################################
# ``codebook_usage`` is the fraction of codes chosen at least once in an
# epoch: a collapsed codebook would show a small value.

print(f"parameters: {vq.count_params():,}")
print(
    f"last epoch: L1 {history.history['l1'][-1]:.4f}, "
    f"codebook usage {history.history['codebook_usage'][-1]:.0%}"
)
print("held-out:", vq.codebook_usage(heldout))

###############################################################################
# Held-out reconstructions, and their difference with the input.

recon = vq.predict(heldout)
for i, (a, b) in enumerate(zip(heldout, recon)):
    print(f"phantom {i}: PSNR {psnr(a, b):.1f} dB, SSIM {ssim(a, b):.3f}")
# 1 = as sharp as the inputs (mean gradient magnitude inside the brain)
print(f"sharpness ratio: {sharpness_ratio(heldout, recon, paired=True):.3f}")
comparison(
    [heldout, recon, recon - heldout],
    "vqvae_reconstructions.png",
    row_titles=("input", "reconstruction", "difference"),
    diff_row=2,
)

###############################################################################
# The model is one self-describing file (architecture, grid, weights).

vq.save("vqvae_phantoms.npz")
again = VQVAE3D.load("vqvae_phantoms.npz")
assert np.array_equal(again.predict(heldout), recon)
