"""Data-parallel training through the backends' own engines.

``fit(..., distribute=...)`` of both models takes:

- ``None`` (default): one device, as Keras places it;
- ``"mirrored"``: ``tf.distribute.MirroredStrategy`` over the local GPUs
  (or the logical CPU devices TensorFlow was configured with);
- ``"multi_worker"``: ``tf.distribute.MultiWorkerMirroredStrategy``, one
  process per machine, the cluster read from ``TF_CONFIG`` as TensorFlow
  documents it. TensorFlow only accepts it before it runs anything, so a
  script calls ``make_strategy("multi_worker")`` first (the workflows
  do); later calls return that strategy;
- ``"data_parallel"``: ``keras.distribution.DataParallel`` over all devices
  (the JAX backend);
- a ``tf.distribute.Strategy`` or a ``keras.distribution.Distribution``.

The models build a copy of their network inside the strategy's scope,
train it and copy the weights back, so ``predict`` and ``save`` work as
after an ordinary ``fit``. The batch size is the global batch, split
across replicas. Only the chief (the ``chief`` task, or worker 0 of a
cluster without one) writes checkpoints; every worker restores from them.
"""

from contextlib import nullcontext
import json
import os
import shutil

import numpy as np

from dipy_ext.nn._backend import keras

STRATEGIES = ("mirrored", "multi_worker", "data_parallel")


def _is_keras_distribution(value):
    # the public API exports the distributions, not their base class
    return isinstance(
        value, (keras.distribution.DataParallel, keras.distribution.ModelParallel)
    )


def make_strategy(distribute):
    """The strategy or distribution named by ``distribute`` (None: none).

    Raises
    ------
    ValueError
        An unknown name, or a strategy the Keras backend cannot run.
    """
    if distribute is None or distribute == "":
        return None
    backend = keras.backend.backend()
    if _is_keras_distribution(distribute):
        return distribute
    if isinstance(distribute, str):
        if distribute not in STRATEGIES:
            raise ValueError(
                f"distribute should be one of {STRATEGIES}, a tf.distribute."
                f"Strategy or a keras.distribution.DataParallel, got {distribute!r}"
            )
        if distribute == "data_parallel":
            if backend != "jax":
                raise ValueError(
                    "distribute='data_parallel' (keras.distribution) needs the JAX "
                    f"backend; on {backend} use 'mirrored' or 'multi_worker'"
                )
            return keras.distribution.DataParallel()
    if backend != "tensorflow":
        raise ValueError(
            f"distribute={distribute!r} needs the TensorFlow backend (running "
            f"{backend}); on JAX use 'data_parallel'"
        )
    import tensorflow as tf

    if isinstance(distribute, tf.distribute.Strategy):
        return distribute
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "distribute='multi_worker' reads the cluster from the TF_CONFIG "
            "environment variable, which is not set"
        )
    global _MULTI_WORKER
    if _MULTI_WORKER is None:
        try:
            _MULTI_WORKER = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:  # "must be configured at program startup"
            raise ValueError(
                "a multi-worker strategy must exist before TensorFlow runs "
                "anything: call dipy_ext.nn.distribute.make_strategy("
                "'multi_worker') first thing in the program, before building "
                f"a model ({e})"
            ) from None
    return _MULTI_WORKER


# one per process: TensorFlow configures its collective ops only once
_MULTI_WORKER = None


def per_replica_loss(loss):
    """A replica's share of the loss under tf.distribute (divided by the
    number of replicas, whose gradients are summed), as Keras scales its
    own losses; unchanged elsewhere. A ``compute_loss`` override that does
    not call Keras' must return this."""
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else loss * (1.0 / replicas)


def strategy_scope(strategy):
    """Where variables must be created for ``strategy`` (a no-op for None)."""
    return nullcontext() if strategy is None else strategy.scope()


def num_replicas(strategy):
    """Replicas that share each global batch."""
    if strategy is None:
        return 1
    if _is_keras_distribution(strategy):
        return len(strategy.device_mesh.devices.ravel())
    return strategy.num_replicas_in_sync


def is_chief(environ=None):
    """Whether this process writes files: not part of a ``TF_CONFIG``
    cluster, its ``chief``, or worker 0 of a cluster without a chief."""
    environ = os.environ if environ is None else environ
    if "TF_CONFIG" not in environ:
        return True
    config = json.loads(environ["TF_CONFIG"])
    task = config.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in config.get("cluster", {})


class BuiltBeforeFit:
    """Mixin for a ``keras.Model`` built (and compiled) before ``fit``,
    working around Keras 3's MultiWorkerMirroredStrategy bugs
    (keras-team/keras#20585): it first builds the model symbolically from
    one batch that it averages across workers, which fails (a model built
    already only needs its optimizer's variables, made here in the
    strategy's scope), and it averages each step's scalar logs along an
    axis they do not have (:func:`_as_vectors`).
    """

    def train_step(self, *args):  # (data) on TensorFlow, (state, data) on JAX
        return _as_vectors(super().train_step(*args), self)

    def test_step(self, *args):
        return _as_vectors(super().test_step(*args), self)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if not self.built or getattr(self, "_distribute_strategy", None) is None:
            return super()._maybe_symbolic_build(iterator, data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self._distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)


def _as_vectors(logs, model):
    """Under MultiWorkerMirroredStrategy Keras averages each step's logs
    along axis 0 across workers, which fails for scalars (the same Keras
    issue): give them that axis."""
    strategy = getattr(model, "_distribute_strategy", None)
    if strategy is None or keras.backend.backend() != "tensorflow":
        return logs
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return logs
    return {k: keras.ops.reshape(v, (1,)) for k, v in logs.items()}


class ChiefBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose backups only the chief writes (and removes).

    Every worker restores from the folder when training starts, so a
    resumed cluster continues from one state (the folder must be shared);
    the others save to a temporary file, as TensorFlow asks of workers.
    """

    def __init__(self, *args, chief=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.chief = chief

    def _save_model(self):
        if self.chief:
            self._check_space()
            try:
                super()._save_model()
            except OSError as e:
                raise ValueError(
                    f"cannot write the training backup '{self._weights_path}': "
                    f"{e}; the backup of the epoch before is kept beside it: "
                    "free space and rerun the same command to resume"
                ) from e
            return
        # saving runs collective ops that every worker must join: the
        # others write to a temporary file, removed at once
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            self.model.save_weights(os.path.join(folder, "w.weights.h5"))

    def _check_space(self):
        """Refuse to start a backup the disk cannot hold: HDF5 fails badly
        on a full disk (hundreds of lines, at worst a crash)."""
        if os.path.exists(self._weights_path):
            need = os.path.getsize(self._weights_path)
        else:  # the weights, the optimizer's moments and the step counters
            variables = [*self.model.weights, *self.model.optimizer.variables]
            need = sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)
        os.makedirs(self.backup_dir, exist_ok=True)
        free = shutil.disk_usage(self.backup_dir).free
        if free < 1.1 * need + 2**20:
            raise ValueError(
                f"no space for the training backup in '{self.backup_dir}' "
                f"(about {need / 2**20:.0f} MB, {free / 2**20:.0f} MB free); "
                "the backup of the epoch before is kept: free space and rerun "
                "the same command to resume"
            )

    def on_train_end(self, logs=None):
        if self.chief:
            super().on_train_end(logs)
