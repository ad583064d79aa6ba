"""Atomic file writes: a temporary file in the destination folder, then a rename.

A run that fails or is killed mid-write leaves no partial file behind, and
an existing file is replaced in one step.
"""

from contextlib import contextmanager
import os
from pathlib import Path
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path, *, suffix=""):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    ``suffix`` keeps the extension libraries look at (``.nii.gz``, ``.png``).
    The file gets the usual permissions (0666 less the umask), not
    mkstemp's private 0600.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
