"""What both training commands do around the fit: their settings record,
their outputs and checkpoint folder, the cohort, resume and the cluster.

A command's settings are the arguments of its ``run`` (defaults filled in),
recorded by :func:`records_options`; all of them make up the identity of
the checkpoint folder except :data:`PLACEMENT`, the options that say where
files go and on which devices the run goes (a run may resume elsewhere).
"""

import contextlib
from contextlib import ExitStack
import functools
import inspect
from pathlib import Path
import shutil
import tempfile
from types import SimpleNamespace

from dipy.utils.logging import logger
import numpy as np

from dipy_ext.workflows.base import check_outputs, output_folder, output_lock
from dipy_ext.workflows.checkpoints import (
    SETTINGS,
    claim_folder,
    has_progress,
    history_logger,
    mark_complete,
    read_history,
    run_settings,
    set_aside_corrupt_backups,
)

# options that do not change what a run trains
PLACEMENT = ("out_dir", "out_model", "out_curves", "checkpoint_dir", "distribute")


def records_options(run):
    """Record a flow's ``run`` arguments, defaults filled in, as
    ``self.options`` (attribute access) before ``run`` starts."""
    signature = inspect.signature(run)

    @functools.wraps(run)
    def recorded(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop("self")
        self.options = SimpleNamespace(**arguments)
        return run(self, *args, **kwargs)

    return recorded


def identity(options):
    """The settings that shape a run: every option but :data:`PLACEMENT`."""
    return {k: v for k, v in vars(options).items() if k not in PLACEMENT}


class TrainingRun:
    """The outputs, checkpoint folder and cohort of one training run.

    Made first thing in ``run``: the distribution strategy is built before
    anything else runs (TensorFlow accepts a multi-worker strategy only
    then), and the model and curves paths are checked against overwriting.
    :meth:`claimed` then holds the run's folders: the output names and the
    checkpoint folder are locked (a second run into them is refused at
    once), and the checkpoint folder (by default beside the model file, so
    rerunning the same command finds the backup of an interrupted run) is
    keyed on the run's settings. Only the chief of a cluster touches files.
    """

    def __init__(self, options, inputs, force, command):
        from dipy_ext.nn.distribute import is_chief

        self.options, self.inputs = options, inputs
        self.force, self.command = force, command
        self.strategy = _strategy(options.distribute)
        self.chief = is_chief()
        self._stack = ExitStack()
        folder = self._stack.enter_context(output_folder(options.out_dir))
        self.model_path = folder / options.out_model
        self.curves_path = folder / options.out_curves
        check_outputs([self.model_path, self.curves_path], force)
        self.keep_checkpoints = bool(options.checkpoint_dir)
        self.ckpt = (
            Path(options.checkpoint_dir)
            if self.keep_checkpoints
            else folder / f"{options.out_model}.checkpoints"
        )

    def __enter__(self):
        return self

    def __exit__(self, *failure):
        return self._stack.__exit__(*failure)

    def claim(self):
        """Lock the outputs and the checkpoint folder, and key the folder on
        the run's settings (the chief; nothing for another worker)."""
        if not self.chief:
            return
        lock = functools.partial(output_lock, command=self.command)
        self._stack.enter_context(
            lock(self.model_path.parent, self.model_path.name, what="model")
        )
        self.ckpt.parent.mkdir(parents=True, exist_ok=True)
        self._stack.enter_context(
            lock(self.ckpt.parent, self.ckpt.name, what="checkpoint folder")
        )
        created = not self.ckpt.exists()
        claim_folder(
            self.ckpt,
            run_settings(identity(self.options), inputs=self.inputs),
            self.force,
        )
        set_aside_corrupt_backups(self.ckpt / "backup")
        self._stack.callback(self._forget_if_untrained, created)

    def _forget_if_untrained(self, created):
        """A run that stopped before it preprocessed or trained anything
        leaves no checkpoint folder it made (only its settings)."""
        if created and self.ckpt.exists() and not has_progress(self.ckpt):
            if {p.name for p in self.ckpt.iterdir()} <= {SETTINGS}:
                shutil.rmtree(self.ckpt, ignore_errors=True)

    def cohort(self, grid):
        """The preprocessed cohort (cached in the checkpoint folder for the
        chief; another worker of a cluster preprocesses in a temporary
        folder) and its input paths."""
        o = self.options
        if self.chief:
            return _prepare_cohort(
                o.input_files, o.mask_files, grid, o.reference, self.ckpt
            )
        with tempfile.TemporaryDirectory() as folder:
            return _prepare_cohort(
                o.input_files, o.mask_files, grid, o.reference, folder
            )

    def split(self, n):
        """Shuffled train / validation indices (validation empty if the
        fraction is 0)."""
        order = np.random.default_rng(self.options.seed).permutation(n)
        n_val = int(round(n * self.options.validation_fraction))
        if n - n_val < 1:
            raise ValueError(f"{n} volumes leave none for training")
        train, val = np.sort(order[n_val:]), np.sort(order[:n_val])
        logger.info(f"Training on {len(train)} volumes, validating on {len(val)}")
        return train, val

    def fit_options(self):
        """The arguments of ``fit`` that backup, log and distribute the run."""
        return {
            "checkpoint_dir": self.ckpt / "backup",
            # removed by finish() once the model file is written: a failed
            # write (a full disk) loses no training, the rerun just saves
            "keep_backup": True,
            "callbacks": [history_logger(self.ckpt)] if self.chief else [],
            "distribute": self.strategy,
        }

    @contextlib.contextmanager
    def _written(self, path):
        """An OSError while writing ``path``: one line naming it (not a
        temporary file), saying the training is kept."""
        try:
            yield
        except OSError as e:
            raise ValueError(
                f"cannot write '{path}': {e.strerror or e}; the training is "
                f"kept in '{self.ckpt}': run the same command again to write "
                "it without training again"
            ) from e

    def finish(self, model, title):
        """Save the model and its training curves (the chief only), remove
        the default checkpoint folder; returns the files written."""
        if not self.chief:
            return []
        history = read_history(self.ckpt)
        with self._written(self.model_path):
            model.save(self.model_path)
        if history:
            from dipy_ext.viz import training_curves

            with self._written(self.curves_path):
                training_curves(history, self.curves_path, title=title)
        else:
            logger.warning("no epoch was run (the checkpoint was already complete)")
        if self.keep_checkpoints:
            shutil.rmtree(self.ckpt / "backup", ignore_errors=True)
            mark_complete(self.ckpt)
        else:
            shutil.rmtree(self.ckpt, ignore_errors=True)
        logger.info(f"Saved {self.model_path} and {self.curves_path}")
        return [str(self.model_path), str(self.curves_path)]


def _strategy(distribute):
    """The distribution strategy ("" or None: none)."""
    from dipy_ext.nn.distribute import make_strategy

    strategy = make_strategy(distribute or None)
    if strategy is not None:
        from dipy_ext.nn.distribute import num_replicas

        logger.info(
            f"Data-parallel training ({distribute}) over "
            f"{num_replicas(strategy)} replicas"
        )
    return strategy


def _prepare_cohort(input_files, mask_files, grid, reference, cache_folder):
    """Preprocess (or reuse the cache of) a cohort; returns volumes, paths."""
    from dipy_ext.data.io import (
        find_nifti_files,
        load_cohort_cache,
        load_volume,
        preprocess_cohort,
    )

    paths = find_nifti_files(input_files)
    cache = Path(cache_folder) / "cohort.npy"
    if cache.exists() and cache.with_suffix(".json").exists():
        volumes, params = load_cohort_cache(cache)
        if [str(p) for p in paths] == [str(p) for p in _cached_paths(cache)] and (
            tuple(params[0].grid_shape) == tuple(grid["shape"])
        ):
            logger.info(f"Reusing the preprocessed cohort in {cache}")
            return volumes, paths
    if reference:
        grid = {**grid, "reference": load_volume(reference)}
    masks = find_nifti_files(mask_files) if mask_files else None
    Path(cache_folder).mkdir(parents=True, exist_ok=True)
    volumes, _ = preprocess_cohort(paths, masks=masks, cache_file=cache, **grid)
    return volumes, paths


def _cached_paths(cache):
    import json

    return [m["path"] for m in json.loads(cache.with_suffix(".json").read_text())]
