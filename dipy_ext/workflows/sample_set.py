"""The files of one ``dipy_synthesize_brain`` run, written as one set.

Volumes and the mosaic are written into a hidden staging folder beside
them, ``.<prefix>.partial``, and moved into place together once all are
written: a run that fails or is killed never leaves a set that looks
finished and is not. The staging folder records the settings that decide
the volumes (model file, seed, sampler settings, conditions); the same
command run again keeps the volumes already staged and draws only the
rest, while other settings start the staging afresh.
"""

import errno
import glob
import json
import os
from pathlib import Path
import shutil

from dipy_ext.workflows.base import write_text_atomic


def check_prefix(prefix):
    """A file name prefix, not a path: the folder is --out_dir's."""
    if not prefix or Path(prefix).name != prefix:
        raise ValueError(
            f"--out_prefix should be a file name prefix, got '{prefix}' "
            "(the folder goes in --out_dir)"
        )


class SampleSet:
    """Names, staging and the final move of ``<prefix>_NNN.nii.gz`` files
    and their mosaic in one folder."""

    def __init__(self, folder, prefix, mosaic, num_samples):
        self.folder = Path(folder)
        self.prefix = prefix
        self.num_samples = num_samples
        self.digits = max(3, len(str(num_samples - 1)))
        self.mosaic = self.folder / mosaic
        self.staging = self.folder / f".{prefix}.partial"

    def name(self, i):
        return f"{self.prefix}_{i:0{self.digits}d}.nii.gz"

    def path(self, i):
        """Where sample ``i`` ends up."""
        return self.folder / self.name(i)

    def staged(self, i):
        """Where sample ``i`` is written first."""
        return self.staging / self.name(i)

    @property
    def mosaic_parts(self):
        """The mosaic's folder and name."""
        return self.mosaic.parent, self.mosaic.name

    @property
    def staged_mosaic(self):
        return self.staging / self.mosaic.name

    def _numbered(self):
        """Files of this prefix with a sample number (any number of digits)."""
        start = len(self.prefix) + 1
        for path in self.folder.glob(f"{glob.escape(self.prefix)}_*.nii.gz"):
            index = path.name[start : -len(".nii.gz")]
            if index.isdigit() and len(index) >= 3:
                yield path

    def check_outputs(self, force):
        """Refuse to replace an earlier set (its volumes or the mosaic)
        unless ``force``: the folder would hold a mix of two runs."""
        existing = [*self._numbered(), *[self.mosaic][: self.mosaic.exists()]]
        if existing and not force:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise ValueError(
                f"output file '{existing[0]}' exists{more}; use --force to "
                "replace the whole set"
            )

    def start(self, settings):
        """Open the staging folder for ``settings`` (a JSON-able dict) and
        return the indices of the samples already staged by the same
        settings."""
        record = self.staging / "settings.json"
        if self.staging.exists():
            try:
                same = json.loads(record.read_text()) == settings
            except (OSError, ValueError):
                same = False
            if not same:
                shutil.rmtree(self.staging)
        self.staging.mkdir(exist_ok=True)
        for leftover in self.staging.glob(".*"):  # a killed write's temporary file
            leftover.unlink()
        write_text_atomic(record, json.dumps(settings, sort_keys=True))
        start = len(self.prefix) + 1
        staged = (
            p.name[start : -len(".nii.gz")] for p in self.staging.glob("*.nii.gz")
        )
        return sorted(
            int(index)
            for index in staged
            if index.isdigit()
            and len(index) == self.digits
            and int(index) < self.num_samples
        )

    def staged_bytes(self, done):
        """Mean size of the staged volumes ``done`` (None if none)."""
        sizes = [self.staged(i).stat().st_size for i in sorted(done)[-32:]]
        return sum(sizes) / len(sizes) if sizes else None

    def check_space(self, remaining, bytes_each, kept):
        """Refuse to go on when ``remaining`` volumes of ``bytes_each`` (and
        the mosaic) cannot fit in the folder's free space."""
        need = remaining * bytes_each + 1e6
        free = shutil.disk_usage(self.folder).free
        if need > free:
            raise ValueError(
                f"{remaining} more volumes need about {need / 1e9:.2f} GB in "
                f"'{self.folder}', which has {free / 1e9:.2f} GB free; free "
                f"space and run the same command again to finish "
                f"({kept} volumes already written are kept)"
            )

    def abandon(self):
        """After a failure: keep the staging folder only if it holds volumes
        a rerun can use."""
        if self.staging.exists() and not any(self.staging.glob("*.nii.gz")):
            shutil.rmtree(self.staging)

    def commit(self, force):
        """Move the staged set into place (with ``force``, the files of an
        earlier set of this prefix that it does not replace are removed
        first) and remove the staging folder."""
        names = {self.name(i) for i in range(self.num_samples)}
        if force:
            for path in self._numbered():
                if path.name not in names:
                    path.unlink()
        for i in range(self.num_samples):
            os.replace(self.staged(i), self.path(i))
        shutil.move(self.staged_mosaic, self.mosaic)  # it may be elsewhere
        shutil.rmtree(self.staging)


def disk_full_message(error, path, kept):
    """A one-line message for an OSError while writing ``path``."""
    if error.errno == errno.ENOSPC:
        return (
            f"no space left on the device while writing '{path}'; free space "
            f"and run the same command again to finish ({kept} volumes already "
            "written are kept)"
        )
    return f"cannot write '{path}': {error.strerror or error}"
