"""What the flows share: output checks, atomic writes, parsing helpers."""

from contextlib import contextmanager
import gzip
from pathlib import Path
import tempfile
import textwrap

import nibabel as nib
import numpy as np

from dipy_ext._files import atomic_path


def doc_sections(**sections):
    """Fill the ``{name}`` lines of a docstring with shared text.

    DIPY builds each command's options and help from its ``run`` docstring;
    options that several workflows share are described once and put in
    place here, indented as the placeholder is.
    """

    def fill(func):
        lines = []
        for line in func.__doc__.splitlines():
            name = line.strip()[1:-1]
            if line.strip() == f"{{{name}}}" and name in sections:
                indent = line[: len(line) - len(line.lstrip())]
                lines.append(textwrap.indent(sections[name], indent).rstrip("\n"))
            else:
                lines.append(line)
        func.__doc__ = "\n".join(lines)
        return func

    return fill


def progress_shown():
    """Whether progress bars and Keras' epoch lines are shown: at
    ``--log_level INFO`` (the default) and below, not above."""
    import logging

    from dipy.utils.logging import logger

    return logger.isEnabledFor(logging.INFO)


def output_dir(out_dir):
    """Create ``out_dir`` if needed and check that files can be written there."""
    path = Path(out_dir or ".").absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"cannot write to output folder '{path}': {e.strerror}") from e
    return path


@contextmanager
def output_folder(out_dir):
    """:func:`output_dir` for one run: the folders it had to create are
    removed again if the run fails with them still empty (a refused run
    leaves nothing behind)."""
    path = Path(out_dir or ".").absolute()
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        yield output_dir(out_dir)
    except BaseException:
        for made in created:  # deepest first
            try:
                made.rmdir()
            except OSError:  # not empty (or not ours to remove): keep it
                break
        raise


@contextmanager
def output_lock(folder, prefix, command, what=None):
    """Hold an exclusive lock on writing ``prefix*`` files into ``folder``.

    A second writer gets a one-line ``ValueError`` at once instead of
    mixing its files with the first one's (naming ``what`` is held, if
    given: "model", "checkpoint folder"). The lock is an advisory
    ``flock`` on a hidden file, removed on exit (where ``fcntl`` does not
    exist, on Windows, no lock is taken).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(folder) / f".{prefix}.lock"
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if what:
                raise ValueError(
                    f"another {command} holds the {what} '{Path(folder) / prefix}'; "
                    "wait for it to finish or choose another --out_dir / "
                    "--checkpoint_dir"
                ) from None
            raise ValueError(
                f"another {command} is writing {prefix}* files into '{folder}'; "
                "wait for it to finish or choose another --out_dir / --out_prefix"
            ) from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_outputs(paths, force):
    """Refuse to overwrite existing outputs unless ``force`` (DIPY's --force)."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ValueError(
            f"output file '{existing[0]}' exists{more}; use --force to overwrite"
        )


# NIfTI xform codes: 2 = aligned to some template or anatomy, 4 = MNI 152
XFORM_CODES = {None: 2, "MNI": 4}


def save_nifti_atomic(path, data, affine, *, space=None, description=""):
    """Write a NIfTI file through a temporary name in the same folder.

    The header is complete: units mm, sform and qform both set, coded MNI
    when ``space`` is "MNI" (else "aligned"), ``description`` (at most 80
    characters) in ``descrip``. The temporary file is hidden and ends in
    ``.part``, so a run killed mid-write leaves nothing that looks like a
    NIfTI volume to a later run.
    """
    img = nib.Nifti1Image(np.asarray(data, np.float32), affine)
    code = XFORM_CODES[space]
    img.set_sform(affine, code)
    img.set_qform(affine, code)
    img.header.set_xyzt_units("mm", "sec")
    if description:
        img.header["descrip"] = description[:80].encode()
    content = img.to_bytes()
    if str(path).endswith(".gz"):
        # a fixed gzip time stamp: the same volume gives the same bytes
        content = gzip.compress(content, compresslevel=6, mtime=0)
    with atomic_path(path, suffix=".part") as tmp:
        Path(tmp).write_bytes(content)
    return Path(path)


def write_text_atomic(path, text):
    """Write a text file (a JSON report) through a temporary name."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def parse_conditions(items, names):
    """``["age=65", "sex=1"]`` -> vector ordered as ``names``.

    Raises a one-line ``ValueError`` naming what was expected.
    """
    items = [i for i in (items or []) if i]
    if not names:
        if items:
            raise ValueError("this model is unconditional: it takes no --conditions")
        return None
    if not items:  # the model draws them from its training distribution
        return None
    expected = " ".join(f"{n}=<value>" for n in names)
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in names:
            raise ValueError(f"--conditions expects {expected}, got '{item}'")
        if name in values:
            raise ValueError(f"--conditions names '{name}' twice; give each once")
        try:
            values[name] = float(value)
        except ValueError as e:
            raise ValueError(
                f"condition '{name}' should be a number, got '{value}'"
            ) from e
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(
            f"--conditions takes all of {expected} or none; missing {missing[0]}"
        )
    return np.array([values[n] for n in names], dtype=np.float32)


def as_triple(value, name):
    """One number or three numbers -> a tuple of three."""
    values = np.atleast_1d(value).tolist()  # Python numbers in messages
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ValueError(f"{name} should be one or three numbers, got {values}")
    return tuple(values)
