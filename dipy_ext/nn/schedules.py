"""The forward (noising) process of diffusion models; no network inside.

Notation (Ho et al. 2020; Song et al. 2021): ``a_t = alphas_cumprod[t]``,
``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps``. The network predicts one of

* ``"epsilon"``: the noise ``eps``;
* ``"v"``: ``v = sqrt(a_t) eps - sqrt(1 - a_t) x_0`` (Salimans & Ho 2022);
* ``"x0"``: the clean sample ``x_0``.

Everything here is plain numpy on arrays of any shape (the reverse process
is in :mod:`dipy_ext.nn.samplers`), except
:meth:`NoiseSchedule.q_sample_ops` and :meth:`NoiseSchedule.target_ops`,
which the training step uses inside the Keras graph.
"""

import numpy as np

SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v", "x0")


def make_betas(name, num_train_timesteps, *, beta_start=None, beta_end=None):
    """Beta schedule of ``num_train_timesteps`` values in (0, 1).

    * ``"linear"``: linear from 1e-4 to 0.02 (DDPM; scaled by 1000/T for
      other T unless ``beta_start``/``beta_end`` are given).
    * ``"scaled_linear"``: linear in sqrt(beta) from 0.0015 to 0.0205
      (latent diffusion, Rombach et al. 2022; Pinaya et al. 2022).
    * ``"cosine"``: ``a_t = cos^2(((t/T + s) / (1 + s)) pi/2)``, s = 0.008,
      betas clipped at 0.999 (Nichol & Dhariwal 2021).
    """
    t = int(num_train_timesteps)
    if t < 1:
        raise ValueError(
            f"num_train_timesteps should be >= 1, got {num_train_timesteps}"
        )
    if name == "linear":
        if beta_start is None and beta_end is None:
            # DDPM's values are for T = 1000; scale them so that any T ends
            # at the same noise level (Nichol & Dhariwal 2021)
            scale = 1000 / t
            return np.linspace(1e-4 * scale, min(0.02 * scale, 0.999), t)
        lo = 1e-4 if beta_start is None else beta_start
        hi = 0.02 if beta_end is None else beta_end
        return np.linspace(lo, hi, t)
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
    """A discrete diffusion process of ``num_train_timesteps`` steps.

    Parameters
    ----------
    num_train_timesteps : int
        Training timesteps T (t runs over 0 .. T-1).
    schedule : {"linear", "scaled_linear", "cosine"}
    prediction_type : {"epsilon", "v", "x0"}
        What the network predicts.
    """

    def __init__(
        self, num_train_timesteps=1000, schedule="cosine", prediction_type="v"
    ):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type should be one of {PREDICTION_TYPES}, "
                f"got {prediction_type!r}"
            )
        self.num_train_timesteps = int(num_train_timesteps)
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.betas = make_betas(schedule, num_train_timesteps)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = np.cumprod(self.alphas)

    def get_config(self):
        return {
            "num_train_timesteps": self.num_train_timesteps,
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


def guided(cond_output, uncond_output, scale):
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)``."""
    return uncond_output + scale * (cond_output - uncond_output)
