"""The checkpoint folder of a training flow: keyed, checked, and logged.

A training flow keeps its preprocessed cohort, its BackupAndRestore state
and its per-epoch history in one folder, so that the same command resumes
an interrupted run. This module makes that safe:

* the folder records the settings that shaped it (every option of the run
  and the size and time of each input file); a rerun with other settings
  starts afresh if nothing was trained yet, and otherwise stops with one
  line saying what differs (``--force`` clears it);
* a backup file that cannot be read (a kill or a full disk during a save)
  is set aside with a warning, so the run resumes from the other copy or
  starts afresh instead of failing in HDF5;
* the history is appended to a CSV file, so the training curves of a
  resumed run show the epochs before the interruption too.
"""

import csv
import json
from pathlib import Path
import shutil

from dipy.utils.logging import logger

from dipy_ext.workflows.base import write_text_atomic

SETTINGS = "settings.json"
HISTORY = "history.csv"
COMPLETE = "complete"  # written once the run's model file is saved


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def run_settings(settings, *, inputs):
    """JSON-ready settings of a run: ``settings`` (the options that shape
    it) and its input files.

    ``inputs`` are the file arguments (globs, folders or files),
    fingerprinted by path, size and modification time.
    """
    from dipy_ext.data.io import find_nifti_files

    settings = {k: _plain(v) for k, v in settings.items()}
    files = []
    for spec in inputs:
        if spec:
            paths = find_nifti_files(spec) if not Path(spec).is_file() else [Path(spec)]
            for p in paths:
                stat = Path(p).stat()
                files.append([str(p), stat.st_size, stat.st_mtime_ns])
    settings["input_files_seen"] = files
    return settings


def has_progress(folder):
    """Whether a folder holds training progress (a backup or a history)."""
    backup = folder / "backup"
    return (folder / HISTORY).exists() or (backup.is_dir() and any(backup.iterdir()))


def claim_folder(folder, settings, force):
    """Use ``folder`` for a run with ``settings``.

    A folder made with other settings is cleared when it holds no training
    progress (say, a run that stopped on a bad input); one that holds an
    interrupted or a completed run's progress is refused with a one-line
    ``ValueError`` naming what differs, unless ``force``, which clears it.
    A completed run with the same settings is cleared: the command runs
    again (its model file was checked against overwriting before).
    """
    folder = Path(folder)
    path = folder / SETTINGS
    differ = []
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        keys = sorted(set(old) | set(settings))
        differ = [k for k in keys if old.get(k) != settings.get(k)]
        named = ", ".join(
            "input files"
            if k == "input_files_seen"
            else f"{k} {old.get(k)} -> {settings.get(k)}"
            for k in differ[:3]
        )
    elif folder.exists() and any(folder.iterdir()):
        differ, named = ["unknown"], "files of an unknown run"
    if differ:
        if has_progress(folder) and not force:
            state = "a completed" if (folder / COMPLETE).exists() else "an interrupted"
            raise ValueError(
                f"checkpoint folder '{folder}' holds {state} run with other "
                f"settings ({named}); rerun with --force to start afresh"
            )
        if has_progress(folder):
            logger.warning(f"Clearing '{folder}': it holds a run with other settings")
        shutil.rmtree(folder)
    elif (folder / COMPLETE).exists():  # the same run again: it starts afresh
        logger.info(f"Clearing '{folder}': its run had completed")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(settings))
    return folder


def mark_complete(folder):
    """Record that the folder's run completed (its model file is written)."""
    write_text_atomic(Path(folder) / COMPLETE, "")


def _readable(path):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            f.visit(lambda name: None)
        return True
    except Exception:  # h5py raises OSError, KeyError, RuntimeError...
        return False


def _set_aside(path):
    if path.exists():
        aside = path.with_name(path.name + ".corrupt")
        path.replace(aside)
        return aside


def set_aside_corrupt_backups(backup_dir):
    """Set aside an unreadable BackupAndRestore state, keeping a good one.

    If the latest weights cannot be read, the previous copy (Keras'
    ``double_checkpoint``) takes their place; if neither can, both are
    renamed ``*.corrupt`` and training starts afresh. Each case is warned.
    """
    folder = Path(backup_dir)
    latest, meta = folder / "latest.weights.h5", folder / "training_metadata.json"
    previous = latest.with_name(latest.name + ".bkp")
    previous_meta = meta.with_name(meta.name + ".bkp")
    if not latest.exists() or _readable(latest):
        return
    aside = _set_aside(latest)
    _set_aside(meta)
    if previous.exists() and _readable(previous):
        shutil.copyfile(previous, latest)
        if previous_meta.exists():
            shutil.copyfile(previous_meta, meta)
        logger.warning(
            f"The latest backup was unreadable (kept as {aside}); "
            "resuming from the one before"
        )
    else:
        _set_aside(previous)
        _set_aside(previous_meta)
        logger.warning(
            f"No readable backup in {folder} (kept as *.corrupt); "
            "training starts afresh"
        )


def history_logger(folder):
    """A CSVLogger appending each epoch's logs to the folder's history."""
    import keras

    return keras.callbacks.CSVLogger(str(Path(folder) / HISTORY), append=True)


def read_history(folder):
    """The whole run's per-epoch logs, resumed parts included (dict of lists).

    An epoch logged twice (rerun after a kill that came after its log line
    but before its backup) keeps its last line.
    """
    path = Path(folder) / HISTORY
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = {
            int(r["epoch"]): r
            for r in csv.DictReader(f)
            if r.get("epoch", "").isdigit()
        }
    history = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            try:
                number = float(value)
            except (TypeError, ValueError):  # CSVLogger writes "NA" for gaps
                continue
            if key != "epoch":
                history.setdefault(key, []).append(number)
    return history
