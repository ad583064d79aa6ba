"""The NFBS fetcher against a small archive served on 127.0.0.1."""

import gzip
import hashlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import io
import tarfile
import threading

import nibabel as nib
import numpy as np
import pytest

from dipy_ext.data import FetcherError, fetch_nfbs, read_nfbs

SUBJECTS = ["A00028185", "A00028352"]


def _nfbs_archive():
    """A tar.gz with the NFBS layout: NFBS_Dataset/<id>/sub-<id>_ses-NFB3_T1w*.nii.gz"""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for sid in SUBJECTS:
            for suffix in ("", "_brain", "_brainmask"):
                img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
                data = gzip.compress(img.to_bytes())
                name = f"NFBS_Dataset/{sid}/sub-{sid}_ses-NFB3_T1w{suffix}.nii.gz"
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ARCHIVE = _nfbs_archive()
MD5 = hashlib.md5(ARCHIVE).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hits = []

    def do_GET(self):
        _Handler.hits.append(self.path)
        body = ARCHIVE
        if self.path.endswith("corrupt.tar.gz"):
            body = ARCHIVE[:-10] + b"0123456789"
        self.send_response(200)
        self.send_header("Content-Length", str(len(ARCHIVE)))
        self.end_headers()
        if self.path.endswith("interrupted.tar.gz"):
            self.wfile.write(body[: len(body) // 2])  # then the connection drops
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_good_download_then_skip(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DIPY_HOME", str(tmp_path))
    _Handler.hits.clear()
    folder = fetch_nfbs(url=f"{server}/good.tar.gz", md5=MD5, progress=False)
    assert folder == tmp_path / "nfbs" / "NFBS_Dataset"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == SUBJECTS
    assert not (tmp_path / "nfbs" / "NFBS_Dataset.tar.gz").exists()  # not kept
    assert (folder / ".complete").read_text().strip() == MD5
    assert len(_Handler.hits) == 1
    fetch_nfbs(url=f"{server}/good.tar.gz", md5=MD5, progress=False)
    assert len(_Handler.hits) == 1  # already there: no second download


def test_read_nfbs_lists_subject_files(server, tmp_path):
    fetch_nfbs(data_home=tmp_path, url=f"{server}/good.tar.gz", progress=False)
    subjects = read_nfbs(data_home=tmp_path)
    assert [s["subject"] for s in subjects] == SUBJECTS
    assert (
        subjects[0]["mask"].name == f"sub-{SUBJECTS[0]}_ses-NFB3_T1w_brainmask.nii.gz"
    )
    assert all(s[k].exists() for s in subjects for k in ("t1", "brain", "mask"))
    assert nib.load(subjects[1]["brain"]).shape == (4, 4, 4)


def test_read_nfbs_without_data_and_no_fetch(tmp_path):
    with pytest.raises(FetcherError, match="fetch_nfbs"):
        read_nfbs(data_home=tmp_path, fetch=False)


def test_corrupt_download_leaves_nothing(server, tmp_path):
    with pytest.raises(FetcherError, match="md5"):
        fetch_nfbs(
            data_home=tmp_path, url=f"{server}/corrupt.tar.gz", md5=MD5, progress=False
        )
    assert list((tmp_path / "nfbs").iterdir()) == []


def test_corrupt_archive_without_md5_leaves_nothing(server, tmp_path):
    with pytest.raises(FetcherError, match="not a readable tar archive"):
        fetch_nfbs(data_home=tmp_path, url=f"{server}/corrupt.tar.gz", progress=False)
    assert list((tmp_path / "nfbs").iterdir()) == []


def test_interrupted_download_leaves_nothing(server, tmp_path):
    with pytest.raises(FetcherError, match="interrupted|failed"):
        fetch_nfbs(
            data_home=tmp_path, url=f"{server}/interrupted.tar.gz", progress=False
        )
    assert list((tmp_path / "nfbs").iterdir()) == []
    # a later good download still works
    fetch_nfbs(data_home=tmp_path, url=f"{server}/good.tar.gz", md5=MD5, progress=False)
    assert (tmp_path / "nfbs" / "NFBS_Dataset" / ".complete").exists()


def test_unreachable_server(tmp_path):
    with pytest.raises(FetcherError, match="failed"):
        fetch_nfbs(
            data_home=tmp_path, url="http://127.0.0.1:9/nothing.tar.gz", progress=False
        )
    assert list((tmp_path / "nfbs").iterdir()) == []


def test_data_home_that_is_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot make the data folder .*a_file/nfbs"):
        fetch_nfbs(data_home=blocker, url="http://127.0.0.1:9/none", progress=False)
