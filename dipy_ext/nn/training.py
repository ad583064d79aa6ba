"""What both models' ``fit`` share: input checks, batches, callbacks, the fit."""

from pathlib import Path
import sys

import numpy as np

from dipy_ext.nn._backend import keras
from dipy_ext.nn.distribute import ChiefBackupAndRestore, is_chief, strategy_scope


def keras_verbosity(verbose):
    """Keras ``fit`` verbosity: a progress bar on a terminal, one line per
    epoch when the output goes to a file or a pipe (a progress bar there
    fills logs with control characters), nothing when not ``verbose``."""
    if not verbose:
        return 0
    return 1 if sys.stdout.isatty() else 2


def as_volume_batch(volumes, shape, *, name="volumes"):
    """Volumes as a float32 ``(N, X, Y, Z)`` array (a memmap is kept as is).

    Accepts one ``(X, Y, Z)`` volume, an ``(N, X, Y, Z)`` array or a list of
    volumes. Returns ``(array, single)`` where ``single`` tells that one
    volume without batch axis was given.
    """
    shape = tuple(shape)
    if isinstance(volumes, (list, tuple)):
        if not volumes:
            raise ValueError(f"{name} is empty")
        volumes = np.stack([np.asarray(v, dtype=np.float32) for v in volumes])
    if not isinstance(volumes, np.ndarray):
        raise ValueError(
            f"{name} should be a numpy array of shape {shape} or (N, *{shape}), "
            f"got {type(volumes).__name__}"
        )
    single = volumes.ndim == len(shape)
    if single:
        volumes = volumes[None]
    if volumes.ndim == len(shape) + 2 and volumes.shape[-1] == 1:
        volumes = volumes[..., 0]
    if volumes.shape[1:] != shape or volumes.shape[0] == 0:
        raise ValueError(
            f"{name} should have shape {shape} or (N, *{shape}) for this model, "
            f"got {volumes.shape}"
        )
    if not isinstance(volumes, np.memmap):
        volumes = np.asarray(volumes, dtype=np.float32)
        if not np.all(np.isfinite(volumes)):
            raise ValueError(f"{name} contains NaN or Inf values")
    return volumes, single


class ArrayBatches(keras.utils.PyDataset):
    """Shuffled batches read from an array or a memory map, channel axis added.

    With a memory map only the current batch is read from disk, so a cohort
    larger than memory can be trained on. The target is the input itself
    (auto-encoding) unless ``targets=False`` (a model that makes its own).
    With ``conditions`` (one row per item) the input is ``(batch,
    conditions)``.

    With ``patch_shape``, each volume gives one random crop of that shape
    per epoch (offsets multiples of ``patch_multiple``, so a network with
    strides sees the voxel phases it sees on whole volumes). Of a few
    candidate crops the one holding the most brain is kept, so patches
    favour the brain over the empty field of view around it.
    """

    def __init__(
        self,
        data,
        batch_size,
        *,
        shuffle=True,
        seed=None,
        flip_axis=None,
        targets=True,
        conditions=None,
        patch_shape=None,
        patch_multiple=1,
        patch_candidates=3,
    ):
        super().__init__()
        self.data = data
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.flip_axis = flip_axis
        self.targets = targets
        self.conditions = conditions
        self.patch_shape = None if patch_shape is None else tuple(patch_shape)
        self.patch_multiple = int(patch_multiple)
        self.patch_candidates = int(patch_candidates)
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(data))
        if shuffle:
            self.rng.shuffle(self.order)

    def __len__(self):
        return int(np.ceil(len(self.data) / self.batch_size))

    def __getitem__(self, index):
        idx = np.sort(
            self.order[index * self.batch_size : (index + 1) * self.batch_size]
        )
        if self.patch_shape is None:
            batch = np.asarray(self.data[idx], dtype=np.float32)
        else:
            batch = np.stack([self._crop(i) for i in idx])
        if self.flip_axis is not None:
            # left-right flips: a symmetric brain is still a brain
            flip = self.rng.random(len(batch)) < 0.5
            batch[flip] = np.flip(batch[flip], axis=self.flip_axis)
        if batch.ndim == 4:
            batch = batch[..., None]
        x = batch if self.conditions is None else (batch, self.conditions[idx])
        return (x, batch) if self.targets else (x,)

    def _crop(self, index):
        """The candidate crop of volume ``index`` with the most brain voxels."""
        best, best_brain = None, -1
        for _ in range(self.patch_candidates):
            slices = []
            for size, patch in zip(self.data.shape[1:], self.patch_shape):
                room = (size - patch) // self.patch_multiple
                start = int(self.rng.integers(room + 1)) * self.patch_multiple
                slices.append(slice(start, start + patch))
            crop = np.asarray(self.data[(index, *slices)], dtype=np.float32)
            brain = int(np.count_nonzero(crop > 1e-3))
            if brain > best_brain:
                best, best_brain = crop, brain
        return best

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)


def learning_rate_schedule(learning_rate, total_steps, *, warmup_steps=None):
    """Linear warm-up, then cosine decay to 1% over the whole run.

    A constant rate leaves the weights jumping between epochs at the end of
    training; decaying it settles them. ``total_steps`` counts the optimizer
    steps of the run (epochs x batches per epoch).
    """
    total_steps = max(int(total_steps), 1)
    warmup = min(100, total_steps // 10) if warmup_steps is None else warmup_steps
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else learning_rate,
        decay_steps=max(total_steps - warmup, 1),
        alpha=0.01,
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop training with a one-line error as soon as the loss is NaN or Inf.

    Keras' TerminateOnNaN only stops the run quietly, which would let the
    caller save a model of NaN weights; raising keeps the last good backup
    (BackupAndRestore) and tells the user what to change.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise ValueError(
                f"training diverged: the loss became {float(loss)} at step "
                f"{batch + 1} of this epoch; nothing was saved (lower the "
                "learning rate, or train in float32 if mixed precision is on)"
            )


def training_callbacks(
    callbacks=None, *, checkpoint_dir=None, extra=(), chief=True, keep_backup=False
):
    """The user's callbacks plus ours; resume support through BackupAndRestore.

    With ``checkpoint_dir``, Keras' BackupAndRestore saves weights, optimizer
    state and epoch after each epoch (keeping the previous copy too, in case a
    kill lands during a save) and restores them when ``fit`` starts again with
    the same folder: an interrupted run resumes at its last completed epoch.
    The backup is removed once training completes, unless ``keep_backup``.
    Only the ``chief`` of a cluster writes backups; every worker restores
    from them.
    """
    out = [StopOnNonFinite(), *extra, *(callbacks or [])]
    if checkpoint_dir is not None:
        if chief:
            Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        # first, so an epoch is backed up before any other callback can fail
        out.insert(
            0,
            ChiefBackupAndRestore(
                str(checkpoint_dir),
                double_checkpoint=True,
                delete_checkpoint=not keep_backup,
                chief=chief,
            ),
        )
    return out


def fit_in_scope(
    trainer,
    train,
    *,
    epochs,
    validation_data,
    callbacks,
    checkpoint_dir,
    strategy,
    verbose,
    extra_callbacks=(),
    keep_backup=False,
):
    """Keras ``fit`` as both models run it: resumable, our callbacks around
    the user's, inside the strategy's scope (``keras.distribution`` shards
    the data in ``fit``)."""
    with strategy_scope(strategy):
        return trainer.fit(
            train,
            epochs=epochs,
            # the batches shuffle themselves from the model's seed; Keras'
            # own shuffle would draw from Python's global generator
            shuffle=False,
            validation_data=validation_data,
            callbacks=training_callbacks(
                callbacks,
                checkpoint_dir=checkpoint_dir,
                extra=extra_callbacks,
                chief=is_chief(),
                keep_backup=keep_backup,
            ),
            verbose=keras_verbosity(verbose),
        )
