"""One sampling loop for every sampler (as MONAI's ``DiffusionInferer``).

A sampler (:mod:`dipy_ext.nn.samplers`) owns its timesteps and its state;
the network is a function. :func:`run_sampler` drives any sampler over
batches of starting noise, so adding a sampler never touches this loop or
the model.
"""

import numpy as np
from tqdm.auto import tqdm


def run_sampler(
    sampler, denoise, noise, rngs, *, num_inference_steps, batch_size, progress=True
):
    """Denoise ``noise`` batch by batch with ``sampler``.

    Parameters
    ----------
    sampler : Sampler
        Any sampler; ``set_timesteps`` starts it afresh for each batch.
    denoise : callable
        ``denoise(x, t, batch)``: the network's output for the samples
        ``x`` at timestep ``t``; ``batch`` is the slice of the samples.
    noise : ndarray (N, ...)
        Starting samples.
    rngs : sequence of numpy Generators
        One per sample (sliceable), for stochastic samplers.
    num_inference_steps : int or None
        Passed to ``set_timesteps``.
    batch_size : int
    progress : bool, optional
        A progress bar over all steps (on a terminal).

    Returns
    -------
    samples : ndarray, the shape of ``noise``
    """
    out = np.empty_like(noise)
    batches = [slice(s, s + batch_size) for s in range(0, len(noise), batch_size)]
    with tqdm(
        desc=f"{sampler.name} sampling",
        disable=None if progress else True,  # None: off when not a terminal
        unit="step",
    ) as bar:
        for batch in batches:
            sampler.set_timesteps(num_inference_steps)  # fresh solver state
            if bar.total is None:
                bar.total = len(batches) * len(sampler.timesteps)
                bar.refresh()
            x = noise[batch]
            for t in sampler.timesteps:
                x = sampler.step(denoise(x, int(t), batch), int(t), x, rngs[batch])
                bar.update(1)
            out[batch] = x
    return out
