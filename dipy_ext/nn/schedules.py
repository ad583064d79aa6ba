"""Noise schedules and samplers for diffusion models; no network inside.

Notation (Ho et al. 2020; Song et al. 2021): ``a_t = alphas_cumprod[t]``,
``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps``. The network predicts one of

* ``"epsilon"``: the noise ``eps``;
* ``"v"``: ``v = sqrt(a_t) eps - sqrt(1 - a_t) x_0`` (Salimans & Ho 2022);
* ``"x0"``: the clean sample ``x_0``.

Everything here is plain numpy on arrays of any shape (the diffusion model
calls the network and hands its output to these functions), except
:meth:`NoiseSchedule.q_sample_ops` and :meth:`NoiseSchedule.target_ops`,
which the training step uses inside the Keras graph.
"""

import numpy as np

SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v", "x0")


def make_betas(name, num_timesteps, *, beta_start=None, beta_end=None):
    """Beta schedule of ``num_timesteps`` values in (0, 1).

    * ``"linear"``: linear from 1e-4 to 0.02 (DDPM; scaled by 1000/T for
      other T unless ``beta_start``/``beta_end`` are given).
    * ``"scaled_linear"``: linear in sqrt(beta) from 0.0015 to 0.0205
      (latent diffusion, Rombach et al. 2022; Pinaya et al. 2022).
    * ``"cosine"``: ``a_t = cos^2(((t/T + s) / (1 + s)) pi/2)``, s = 0.008,
      betas clipped at 0.999 (Nichol & Dhariwal 2021).
    """
    t = int(num_timesteps)
    if t < 1:
        raise ValueError(f"num_timesteps should be >= 1, got {num_timesteps}")
    if name == "linear":
        if beta_start is None and beta_end is None:
            # DDPM's values are for T = 1000; scale them so that any T ends
            # at the same noise level (Nichol & Dhariwal 2021)
            scale = 1000 / t
            return np.linspace(1e-4 * scale, min(0.02 * scale, 0.999), t)
        return np.linspace(beta_start or 1e-4, beta_end or 0.02, t)
    if name == "scaled_linear":
        lo = 0.0015 if beta_start is None else beta_start
        hi = 0.0205 if beta_end is None else beta_end
        return np.linspace(np.sqrt(lo), np.sqrt(hi), t) ** 2
    if name == "cosine":
        s = 0.008
        steps = np.arange(t + 1) / t
        f = np.cos((steps + s) / (1 + s) * np.pi / 2) ** 2
        return np.clip(1 - f[1:] / f[:-1], 0, 0.999)
    raise ValueError(f"schedule should be one of {SCHEDULES}, got {name!r}")


class NoiseSchedule:
    """A discrete diffusion process of ``num_timesteps`` steps.

    Parameters
    ----------
    num_timesteps : int
        Training timesteps T (t runs over 0 .. T-1).
    schedule : {"linear", "scaled_linear", "cosine"}
    prediction_type : {"epsilon", "v", "x0"}
        What the network predicts.
    """

    def __init__(self, num_timesteps=1000, schedule="cosine", prediction_type="v"):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type should be one of {PREDICTION_TYPES}, "
                f"got {prediction_type!r}"
            )
        self.num_timesteps = int(num_timesteps)
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.betas = make_betas(schedule, num_timesteps)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = np.cumprod(self.alphas)

    def get_config(self):
        return {
            "num_timesteps": self.num_timesteps,
            "schedule": self.schedule,
            "prediction_type": self.prediction_type,
        }

    # ------------------------------------------------------------ forward
    def _a(self, t, ndim):
        """alphas_cumprod at t (int or array), shaped to broadcast on ndim."""
        a = self.alphas_cumprod[np.asarray(t)]
        return np.reshape(a, np.shape(a) + (1,) * (ndim - np.ndim(a)))

    def q_sample(self, x0, noise, t):
        """``x_t`` given ``x_0``, noise and t (numpy)."""
        a = self._a(t, np.ndim(x0))
        return np.sqrt(a) * x0 + np.sqrt(1 - a) * noise

    def target(self, x0, noise, t):
        """What the network should output at ``x_t`` (numpy)."""
        a = self._a(t, np.ndim(x0))
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v":
            return np.sqrt(a) * noise - np.sqrt(1 - a) * x0
        return x0

    def q_sample_ops(self, x0, noise, t):
        """:meth:`q_sample` in ``keras.ops`` for a batch, t of shape (N,)."""
        sa, sb = self._coefs_ops(t, x0)
        return sa * x0 + sb * noise

    def target_ops(self, x0, noise, t):
        """:meth:`target` in ``keras.ops`` for a batch, t of shape (N,)."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "x0":
            return x0
        sa, sb = self._coefs_ops(t, x0)
        return sa * noise - sb * x0

    def _coefs_ops(self, t, x):
        from keras import ops

        a = ops.take(ops.convert_to_tensor(self.alphas_cumprod, "float32"), t)
        shape = (-1,) + (1,) * (len(x.shape) - 1)
        return ops.reshape(ops.sqrt(a), shape), ops.reshape(ops.sqrt(1 - a), shape)

    # ------------------------------------------------------------ reverse
    def predict_x0_eps(self, x_t, model_output, t):
        """``(x0_hat, eps_hat)`` from the network output at ``x_t``, step t."""
        a = self._a(t, np.ndim(x_t))
        sa, sb = np.sqrt(a), np.sqrt(1 - a)
        if self.prediction_type == "epsilon":
            eps = model_output
            x0 = (x_t - sb * eps) / sa
        elif self.prediction_type == "v":
            x0 = sa * x_t - sb * model_output
            eps = sb * x_t + sa * model_output
        else:
            x0 = model_output
            eps = (x_t - sa * x0) / sb
        return x0, eps

    def posterior(self, x0, x_t, t):
        """Mean and variance of q(x_{t-1} | x_t, x_0) (DDPM eq. 6-7)."""
        t = int(t)
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[t - 1] if t > 0 else 1.0
        beta = self.betas[t]
        mean = (np.sqrt(a_prev) * beta / (1 - a_t)) * x0 + (
            np.sqrt(self.alphas[t]) * (1 - a_prev) / (1 - a_t)
        ) * x_t
        variance = beta * (1 - a_prev) / (1 - a_t)
        return mean, variance

    def ddpm_step(self, model_output, t, x_t, rng, *, clip=None):
        """One ancestral DDPM step t -> t-1 (no noise at t = 0)."""
        x0, _ = self.predict_x0_eps(x_t, model_output, t)
        if clip is not None:
            x0 = np.clip(x0, -clip, clip)
        mean, variance = self.posterior(x0, x_t, t)
        if t == 0:
            return mean
        return mean + np.sqrt(variance) * rng.standard_normal(np.shape(x_t)).astype(
            np.float32
        )

    def ddim_timesteps(self, num_inference_steps):
        """Decreasing, evenly spaced timesteps from T-1 down to 0."""
        n = int(num_inference_steps)
        if not 1 <= n <= self.num_timesteps:
            raise ValueError(
                f"num_inference_steps should be in 1..{self.num_timesteps}, got {n}"
            )
        return np.unique(
            np.round(np.linspace(0, self.num_timesteps - 1, n)).astype(int)
        )[::-1]

    def ddim_step(self, model_output, t, t_prev, x_t, *, eta=0.0, rng=None, clip=None):
        """One DDIM step t -> t_prev (t_prev < 0 means "to x_0").

        ``eta=0`` is deterministic; ``eta=1`` with consecutive steps is
        DDPM's ancestral sampler.
        """
        x0, eps = self.predict_x0_eps(x_t, model_output, t)
        if clip is not None:
            x0 = np.clip(x0, -clip, clip)
            eps = (x_t - np.sqrt(self.alphas_cumprod[t]) * x0) / np.sqrt(
                1 - self.alphas_cumprod[t]
            )
        if t_prev < 0:
            return x0
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[t_prev]
        sigma = eta * np.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        x_prev = np.sqrt(a_prev) * x0 + np.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x_prev = x_prev + sigma * rng.standard_normal(np.shape(x_t)).astype(
                np.float32
            )
        return x_prev


def guided(cond_output, uncond_output, scale):
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)``."""
    return uncond_output + scale * (cond_output - uncond_output)
