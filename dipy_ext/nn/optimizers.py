"""Adam with a learning rate and momentum of its own for a group of weights.

Adversarial training gives the discriminator its own optimizer (every recipe
in ANCHORS.md does; some at a higher learning rate and with beta_1 0.5).
Keras trains a model through one optimizer, on every backend; this one runs
two Adams in one object: the weights of the second group (the
discriminator's) take their own learning rate (a multiple of the first
group's schedule) and their own beta_1. Moments are per weight in Adam
anyway, so the two groups share nothing else. Written against Keras'
``update_step``, it needs no backend-specific line and checkpoints with the
trainer (BackupAndRestore).
"""

from dipy_ext.nn._backend import keras, ops


class TwoGroupAdam(keras.optimizers.Adam):
    """Adam whose ``second`` weights use ``second_lr_ratio`` and ``second_beta_1``.

    Parameters
    ----------
    learning_rate : float or schedule
        The first group's learning rate (the autoencoder's).
    second : list of variables
        The second group (the discriminator's trainable weights).
    second_lr_ratio : float, optional
        The second group's learning rate over the first's, at every step.
    second_beta_1 : float, optional
        The second group's first-moment decay.
    **kwargs
        Passed to ``keras.optimizers.Adam``.
    """

    def __init__(
        self,
        learning_rate,
        *,
        second=(),
        second_lr_ratio=1.0,
        second_beta_1=0.9,
        **kwargs,
    ):
        super().__init__(learning_rate, **kwargs)
        self._second_ids = {id(v) for v in second}
        self.second_lr_ratio = float(second_lr_ratio)
        self.second_beta_1 = float(second_beta_1)
        self._second_index = set()

    def build(self, var_list):
        super().build(var_list)
        self._second_index = {
            i for i, v in enumerate(var_list) if id(v) in self._second_ids
        }

    def update_step(self, gradient, variable, learning_rate):
        """Adam's step, with the second group's learning rate and beta_1."""
        if self._get_variable_index(variable) not in self._second_index:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype) * self.second_lr_ratio
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1 = self.second_beta_1
        alpha = (
            lr
            * ops.sqrt(1 - ops.power(ops.cast(self.beta_2, dtype), step))
            / (1 - ops.power(ops.cast(beta_1, dtype), step))
        )
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, (gradient - m) * (1 - beta_1))
        self.assign_add(v, (ops.square(gradient) - v) * (1 - self.beta_2))
        self.assign_sub(variable, m * alpha / (ops.sqrt(v) + self.epsilon))
