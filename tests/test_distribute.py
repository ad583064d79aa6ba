"""Data-parallel training: tf.distribute (mirrored, multi-worker) and
keras.distribution on JAX, each run in real worker processes
(``distributed_worker.py``), compared with training on one device."""

import json
import os
from pathlib import Path
import socket
import subprocess
import sys

import numpy as np
import numpy.testing as npt
import pytest

pytest.importorskip("keras")

from dipy_ext.nn.distribute import is_chief, make_strategy  # noqa: E402

WORKER = str(Path(__file__).with_name("distributed_worker.py"))


def run_worker(mode, out, **env):
    return subprocess.Popen(
        [sys.executable, WORKER, mode, str(out)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]


@pytest.mark.slow
def test_mirrored_two_devices_match_one_device(tmp_path):
    # every step sees the whole cohort (4 volumes, global batch 4, 2 per
    # replica): the two runs see the same batches, step after step
    finish(run_worker("mirrored", tmp_path, N="4", EPOCHS="3", BATCH="4"))
    single, mirrored = (np.load(tmp_path / f"{n}.npz") for n in ("single", "mirrored"))
    assert set(single) == set(mirrored)
    # weights, codebook and its EMA statistics; Adam's first steps move each
    # weight by about the learning rate (1e-3) whatever its gradient's size,
    # so round-off in tiny gradients shows at that scale, never more. (A
    # codebook statistic not summed across replicas would be off by half.)
    for key in single:
        npt.assert_allclose(mirrored[key], single[key], atol=1e-3)
    # dead-code restarts are on: every replica draws the same encoder vectors
    # from the gathered global batch, so the codebook (16 codes x 4) and its
    # EMA sums match to round-off, not merely to Adam's step size (averaged
    # per-replica picks were off by 1e-3 here, and by 0.89 in longer runs)
    codebooks = [key for key in single if single[key].shape == (16, 4)]
    assert len(codebooks) == 2
    for key in codebooks:
        npt.assert_allclose(mirrored[key], single[key], atol=1e-5)
    runs = json.loads((tmp_path / "history.json").read_text())
    assert runs["replicas"] == 2
    for metric in ("l1", "codebook_usage", "perplexity"):
        npt.assert_allclose(runs["mirrored"][metric], runs["single"][metric], rtol=1e-4)
    # the backups of a finished run are removed by the chief
    assert not (tmp_path / "backup_mirrored").exists()
    ldm = runs["ldm"]  # diffusion under the same strategy
    assert np.isfinite(ldm["loss"]).all()
    assert ldm["weights_changed"] and ldm["sample_finite"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_two_processes(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers = [
        run_worker(
            "multi_worker",
            tmp_path,
            TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": i}}
            ),
        )
        for i in range(2)
    ]
    for process in workers:
        finish(process)
    chief, other = (np.load(tmp_path / f"worker_{i}.npz") for i in range(2))
    for key in chief:  # both replicas end with one model
        npt.assert_array_equal(chief[key], other[key])
    assert (tmp_path / "vqvae.npz").exists()  # written by the chief only
    assert not (tmp_path / "backup").exists()


@pytest.mark.slow
def test_jax_data_parallel_two_devices(tmp_path):
    pytest.importorskip("jax")
    env = {
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "N": "4",
    }
    finish(run_worker("data_parallel", tmp_path, **env))
    assert (tmp_path / "data_parallel_devices.txt").read_text() == "2"
    single, parallel = (
        np.load(tmp_path / f"{n}.npz") for n in ("single", "data_parallel")
    )
    for key in single:
        npt.assert_allclose(parallel[key], single[key], atol=1e-4, rtol=1e-4)


def test_strategy_names_and_errors(monkeypatch):
    assert make_strategy(None) is None and make_strategy("") is None
    with pytest.raises(ValueError, match="distribute should be one of"):
        make_strategy("horovod")
    with pytest.raises(ValueError, match="needs the JAX backend"):
        make_strategy("data_parallel")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_strategy("multi_worker")


@pytest.mark.parametrize(
    "config, chief",
    [
        (None, True),
        (
            {"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 0}},
            True,
        ),
        (
            {"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 1}},
            False,
        ),
        (
            {
                "cluster": {"chief": ["c"], "worker": ["a"]},
                "task": {"type": "worker", "index": 0},
            },
            False,
        ),
        (
            {
                "cluster": {"chief": ["c"], "worker": ["a"]},
                "task": {"type": "chief", "index": 0},
            },
            True,
        ),
    ],
)
def test_only_the_chief_writes(config, chief):
    environ = {} if config is None else {"TF_CONFIG": json.dumps(config)}
    assert is_chief(environ) is chief
