"""Download the NFBS data set, in the shape of DIPY's fetchers.

Files go under ``$DIPY_HOME`` (default ``~/.dipy``). A download streams to a
``.part`` file with a progress bar, is checked (complete length, md5 when one
is known, a readable archive), then renamed; a failed or interrupted download
leaves no file in place. Data already there are not fetched again.
"""

import gzip
import hashlib
import os
from pathlib import Path
import shutil
import tarfile
from urllib.error import URLError
from urllib.request import urlopen
import zlib

from dipy.data.fetcher import FetcherError as DipyFetcherError
from dipy.utils.logging import logger
from tqdm.auto import tqdm

NFBS_URL = (
    "https://fcp-indi.s3.amazonaws.com/data/Projects/RocklandSample/NFBS_Dataset.tar.gz"
)
# The NFBS distributors publish no checksum. When md5 is None the download is
# checked for completeness and readability, and the md5 it had is recorded in
# the completion marker so that later reads can tell which archive they use.
NFBS_MD5 = None
NFBS_FOLDER = "NFBS_Dataset"
_MARKER = ".complete"


class FetcherError(DipyFetcherError):
    """A download or extraction failed; nothing partial was left in place.

    A subclass of DIPY's own, so ``except dipy.data.fetcher.FetcherError``
    catches it too.
    """


def dipy_home():
    """DIPY's data folder: ``$DIPY_HOME`` or ``~/.dipy``."""
    return Path(os.environ.get("DIPY_HOME", Path.home() / ".dipy"))


def md5sum(path, *, chunk=1 << 20):
    """md5 hex digest of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url, dest, *, md5=None, timeout=60, progress=True):
    """Download ``url`` to ``dest`` through ``dest.part``; check, then rename.

    Raises
    ------
    FetcherError
        Network error, fewer bytes than announced, or md5 mismatch. The
        partial file is removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = response.headers.get("Content-Length")
            total = int(total) if total is not None else None
            received = 0
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                disable=None if progress else True,  # None: off when not a terminal
            ) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
        if total is not None and received != total:
            raise FetcherError(
                f"download of {url} was interrupted: {received} of {total} bytes"
            )
        if md5 is not None and (got := md5sum(part)) != md5:
            raise FetcherError(
                f"md5 checksum of {dest.name} is {got}, expected {md5}: the "
                "download is corrupt or the remote file changed"
            )
    except (URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        raise FetcherError(f"download of {url} failed: {e}") from e
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(dest)
    return dest


def _extract(archive, folder):
    """Extract a tar archive into ``folder`` through a temporary folder."""
    tmp = folder.with_name(folder.name + ".extracting")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if archive.name.endswith("gz"):
            # tarfile stops at the end-of-archive marker and never checks the
            # gzip CRC: read the whole stream once so a damaged tail is caught
            with gzip.open(archive) as stream:
                while stream.read(1 << 20):
                    pass
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FetcherError(f"{archive.name} is not a readable tar archive: {e}") from e
    return tmp


def fetch_nfbs(
    *, data_home=None, url=NFBS_URL, md5=NFBS_MD5, keep_archive=False, progress=True
):
    """Download and extract the NFBS data set (125 skull-stripped T1w).

    Parameters
    ----------
    data_home : str or Path, optional
        Parent folder; default ``$DIPY_HOME`` or ``~/.dipy``. The data go in
        ``<data_home>/nfbs/NFBS_Dataset``.
    url : str, optional
        Archive address (about 1.9 GB).
    md5 : str, optional
        Expected md5 of the archive; None skips the comparison.
    keep_archive : bool, optional
        Keep the ``.tar.gz`` after extraction.
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    folder : Path
        The extracted ``NFBS_Dataset`` folder.
    """
    home = Path(data_home) if data_home is not None else dipy_home()
    root = home / "nfbs"
    folder = root / NFBS_FOLDER
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way, no permission, a full disk
        raise ValueError(
            f"cannot make the data folder '{root}' (data_home should be a "
            f"writable folder): {e.strerror or e}"
        ) from e
    if (folder / _MARKER).exists():
        logger.info(f"NFBS already in {folder}")
        return folder
    archive = root / "NFBS_Dataset.tar.gz"
    if not archive.exists():
        logger.info(f"Downloading NFBS to {root}")
        download(url, archive, md5=md5, progress=progress)
    elif md5 is not None and md5sum(archive) != md5:
        archive.unlink()
        raise FetcherError(f"{archive} does not match md5 {md5}; removed it, retry")
    try:
        tmp = _extract(archive, folder)
        inner = tmp / NFBS_FOLDER
        if not inner.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            raise FetcherError(f"{archive.name} has no {NFBS_FOLDER}/ folder")
    except FetcherError:
        archive.unlink()  # a broken archive must not be taken as downloaded
        raise
    shutil.rmtree(folder, ignore_errors=True)
    inner.replace(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    (folder / _MARKER).write_text(md5sum(archive) + "\n")
    if not keep_archive:
        archive.unlink()
    logger.info(f"NFBS extracted to {folder}")
    return folder


def read_nfbs(*, data_home=None, fetch=True, **fetch_kwargs):
    """Per-subject NFBS file paths, fetching the data set first if needed.

    Returns
    -------
    subjects : list of dict
        One dict per subject, sorted by id, with keys ``subject``, ``t1``
        (head), ``brain`` (skull-stripped T1) and ``mask`` (brain mask).
    """
    home = Path(data_home) if data_home is not None else dipy_home()
    folder = home / "nfbs" / NFBS_FOLDER
    if not (folder / _MARKER).exists():
        if not fetch:
            raise FetcherError(f"NFBS is not in {folder}; call fetch_nfbs() first")
        folder = fetch_nfbs(data_home=home, **fetch_kwargs)
    subjects = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        stem = f"sub-{sub.name}_ses-NFB3_T1w"
        files = {
            "t1": sub / f"{stem}.nii.gz",
            "brain": sub / f"{stem}_brain.nii.gz",
            "mask": sub / f"{stem}_brainmask.nii.gz",
        }
        missing = [str(p) for p in files.values() if not p.exists()]
        if missing:
            raise FetcherError(f"NFBS subject {sub.name} lacks {missing[0]}")
        subjects.append({"subject": sub.name, **files})
    return subjects
