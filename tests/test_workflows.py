"""The DIPY workflows through Flow().run(...), and as installed console scripts."""

import inspect
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import numpy.testing as npt
import pytest

pytest.importorskip("keras")

from dipy_ext.data import phantom_cohort  # noqa: E402
from dipy_ext.workflows.base import doc_sections  # noqa: E402
from dipy_ext.workflows.evaluation import EvaluateSynthesisFlow  # noqa: E402
from dipy_ext.workflows.synthesis import SynthesizeBrainFlow  # noqa: E402
from dipy_ext.workflows.training import (  # noqa: E402
    TrainLatentDiffusion3DFlow,
    TrainVQVAE3DFlow,
)

GRID = (16, 16, 16)


def test_training_flows_write_models_and_curves(trained_files):
    for name in (
        "vqvae3d.npz",
        "vqvae3d_training.png",
        "latent_diffusion3d.npz",
        "latent_diffusion3d_training.png",
    ):
        assert (trained_files / name).stat().st_size > 0
    from dipy_ext.nn.diffusion import LatentDiffusion3D

    ldm = LatentDiffusion3D.load(trained_files / "latent_diffusion3d.npz")
    assert ldm.condition_names == ["age", "sex"]
    npt.assert_allclose(ldm.vqvae.voxel_size, (4, 4, 4))
    # the default checkpoint folders are gone once training completed
    assert not (trained_files / "vqvae3d.npz.checkpoints").exists()
    assert not (trained_files / "latent_diffusion3d.npz.checkpoints").exists()


def test_synthesize_flow(trained_files, tmp_path):
    options = {
        "model_file": str(trained_files / "latent_diffusion3d.npz"),
        "num_samples": 3,
        "num_inference_steps": 5,
        "batch_size": 2,
        "conditions": ["age=70", "sex=1"],
        "guidance_scale": 2.0,
        "out_dir": str(tmp_path),
    }
    SynthesizeBrainFlow().run(**options)
    files = sorted(tmp_path.glob("synthetic_brain_*.nii.gz"))
    assert [f.name for f in files] == [
        f"synthetic_brain_00{i}.nii.gz" for i in range(3)
    ]
    img = nib.load(files[0])
    assert img.shape == GRID
    npt.assert_allclose(np.diag(img.affine)[:3], [4, 4, 4])
    data = np.asarray(img.dataobj)
    assert 0 <= data.min() and data.max() <= 1
    assert (tmp_path / "synthetic_brains.png").stat().st_size > 0
    assert not list(tmp_path.glob(".*"))  # no temporary file left
    # same seed, same volumes; existing outputs refused without --force
    with pytest.raises(ValueError, match="exists.*--force"):
        SynthesizeBrainFlow().run(**options)
    SynthesizeBrainFlow(force=True).run(**options)
    npt.assert_array_equal(np.asarray(nib.load(files[0]).dataobj), data)
    # the same seed gives the same volumes whatever the batch size
    last = data_of(files[2])  # drawn in the second batch of 2
    for batch_size in (1, 3):  # (float round-off may differ with the batch)
        SynthesizeBrainFlow(force=True).run(**{**options, "batch_size": batch_size})
        npt.assert_allclose(data_of(files[0]), data, atol=1e-4)
        npt.assert_allclose(data_of(files[2]), last, atol=1e-4)
    # --force with fewer samples leaves one set, not a mix with the old one
    SynthesizeBrainFlow(force=True).run(**{**options, "num_samples": 1})
    assert sorted(f.name for f in tmp_path.glob("*.nii.gz")) == [
        "synthetic_brain_000.nii.gz"
    ]
    npt.assert_array_equal(data_of(files[0]), data)


def data_of(path):
    return np.asarray(nib.load(path).dataobj)


def test_killed_nifti_write_leaves_nothing_nifti_like(tmp_path, monkeypatch):
    """A write killed after its temporary file is complete leaves only a
    hidden .part file, which folder inputs do not pick up."""
    import dipy_ext._files as files_module
    from dipy_ext.data.io import find_nifti_files
    from dipy_ext.workflows.base import save_nifti_atomic

    save_nifti_atomic(tmp_path / "a.nii.gz", np.ones((4, 4, 4)), np.eye(4))

    def killed(src, dst):
        raise KeyboardInterrupt  # the rename never happens

    monkeypatch.setattr(files_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_nifti_atomic(tmp_path / "b.nii.gz", np.ones((4, 4, 4)), np.eye(4))
    monkeypatch.undo()
    # the atomic writer removes its temporary file; a hard kill (no cleanup)
    # would leave a hidden ".b.nii.gz.*.part": neither is taken as input
    (tmp_path / ".b.nii.gz.x1y2.part").write_bytes(b"\x1f\x8b truncated")
    assert not any(p.name.endswith((".nii", ".nii.gz")) for p in tmp_path.glob(".*"))
    assert [p.name for p in find_nifti_files(tmp_path)] == ["a.nii.gz"]
    (tmp_path / ".hidden.nii.gz").write_bytes(b"truncated")  # an older writer's
    assert [p.name for p in find_nifti_files(tmp_path)] == ["a.nii.gz"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_samples": 0}, "--num_samples should be an integer >= 1"),
        ({"conditions": ["age=70"]}, "missing sex"),
        ({"conditions": ["weight=70", "sex=1"]}, "expects age=<value> sex=<value>"),
        ({"conditions": ["age=old", "sex=1"]}, "should be a number"),
        ({"sampler": "euler"}, "sampler should be"),
        ({"eta": float("nan")}, "eta should be a number from 0 to 1"),
        ({"eta": float("inf")}, "eta should be a number from 0 to 1"),
        ({"eta": -1.0}, "eta should be a number from 0 to 1"),
        ({"eta": 5.0}, "eta should be a number from 0 to 1"),
        ({"guidance_scale": float("nan")}, "guidance_scale should be a finite"),
        ({"guidance_scale": float("inf")}, "guidance_scale should be a finite"),
        ({"guidance_scale": 1e30}, r"guidance_scale should be a finite number in \[0"),
    ],
)
def test_synthesize_flow_bad_input(trained_files, tmp_path, kwargs, message):
    args = {
        "model_file": str(trained_files / "latent_diffusion3d.npz"),
        "conditions": ["age=70", "sex=1"],
        "num_inference_steps": 2,
        "out_dir": str(tmp_path),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        SynthesizeBrainFlow().run(**args)
    assert not list(tmp_path.iterdir())  # nothing written


def test_synthesize_flow_model_errors(trained_files, tmp_path):
    vq_file = str(trained_files / "vqvae3d.npz")
    with pytest.raises(ValueError, match="holds a VQVAE3D model"):
        SynthesizeBrainFlow().run(model_file=vq_file, out_dir=str(tmp_path))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes((trained_files / "latent_diffusion3d.npz").read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a (readable )?dipy_ext model"):
        SynthesizeBrainFlow().run(model_file=str(corrupt), out_dir=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="does not exist"):
        SynthesizeBrainFlow().run(
            model_file=str(tmp_path / "nope.npz"), out_dir=str(tmp_path / "o")
        )


def test_unwritable_out_dir(trained_files, tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "a_file"
        blocker.write_text("x")
        out = blocker / "sub"  # a folder cannot be made under a file
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
    with pytest.raises(ValueError, match="cannot write to output folder"):
        SynthesizeBrainFlow().run(
            model_file=str(trained_files / "latent_diffusion3d.npz"), out_dir=str(out)
        )


def test_train_flow_bad_inputs(t1_folder, tmp_path):
    with pytest.raises(ValueError, match="no NIfTI file"):
        TrainVQVAE3DFlow().run(str(tmp_path / "*.nii.gz"), out_dir=str(tmp_path))
    four_d = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 2), np.float32), np.eye(4)), four_d)
    with pytest.raises(ValueError, match="3D volume"):
        TrainVQVAE3DFlow().run(str(four_d), grid_shape=GRID, out_dir=str(tmp_path))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="expected NIfTI"):
        TrainVQVAE3DFlow().run(str(text), out_dir=str(tmp_path))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ValueError, match="cannot read"):
        TrainVQVAE3DFlow().run(str(bad), grid_shape=GRID, out_dir=str(tmp_path))


@pytest.mark.slow
def test_vqvae_training_resumes_after_interruption(t1_folder, tmp_path):
    """A run killed during epoch 3 restarts at epoch 3 from its backup."""
    import keras

    class StopAfter(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    from dipy_ext.nn.vqvae import VQVAE3D

    vols = phantom_cohort(4, GRID, rng=0)
    kw = {
        "input_shape": GRID,
        "channels": (8, 16),
        "num_res_blocks": 1,
        "quantizer": "vq",
        "output_stage": "subpixel",
        "num_embeddings": 16,
        "embedding_dim": 4,
        "seed": 0,
    }
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        VQVAE3D(**kw).fit(
            vols, epochs=4, batch_size=2, checkpoint_dir=ckpt, callbacks=[StopAfter()]
        )
    assert any(ckpt.iterdir())
    history = VQVAE3D(**kw).fit(vols, epochs=4, batch_size=2, checkpoint_dir=ckpt)
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 only
    assert not ckpt.exists()  # backup removed once complete


def test_evaluate_flow(t1_folder, trained_files, tmp_path):
    synth = tmp_path / "synth"
    SynthesizeBrainFlow().run(
        model_file=str(trained_files / "latent_diffusion3d.npz"),
        num_samples=4,
        num_inference_steps=3,
        conditions=["age=70", "sex=1"],
        out_dir=str(synth),
    )
    out = tmp_path / "eval"
    with pytest.raises(ValueError, match="--resample"):
        EvaluateSynthesisFlow().run(
            str(t1_folder / "*_T1w.nii.gz"), str(synth / "*.nii.gz"), out_dir=str(out)
        )
    EvaluateSynthesisFlow().run(
        str(t1_folder / "*_T1w.nii.gz"),
        str(synth / "*.nii.gz"),
        resample=True,
        max_pairs=5,
        out_dir=str(out),
    )
    report = json.loads((out / "evaluation.json").read_text())
    assert report["n_real"] == 6 and report["n_synthetic"] == 4
    assert report["features"] == "stats"
    for key in (
        "diversity",
        "frechet_distance",
        "mmd2_rbf",
        "prdc",
        "memorization",
        "classifier_two_sample_test",
        "tissue",
    ):
        assert key in report
    assert (out / "evaluation.png").stat().st_size > 0
    with pytest.raises(ValueError, match="at least 2 volumes"):
        EvaluateSynthesisFlow().run(
            str(t1_folder / "sub0_T1w.nii.gz"),
            str(synth / "*.nii.gz"),
            out_dir=str(tmp_path / "e2"),
        )


def _script(name):
    """The installed console script: beside this Python (a venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    path = str(beside) if beside.exists() else shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install the package)")
    return path


def _call(args, **kw):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        args, capture_output=True, text=True, env=env, timeout=600, **kw
    )


def test_console_scripts_help():
    for name in (
        "dipy_synthesize_brain",
        "dipy_train_vqvae3d",
        "dipy_train_latent_diffusion3d",
        "dipy_evaluate_synthesis",
        "dipy_fetch_nfbs",
    ):
        result = _call([_script(name), "--help"])
        assert result.returncode == 0, result.stderr
        assert "usage" in result.stdout


@pytest.mark.slow
def test_synthesize_console_script(trained_files, tmp_path):
    script = _script("dipy_synthesize_brain")
    model = str(trained_files / "latent_diffusion3d.npz")
    args = [
        script,
        "--model_file",
        model,
        "--num_samples",
        "2",
        "--num_inference_steps",
        "3",
        "--conditions",
        "age=65",
        "sex=0",
        "--out_dir",
        str(tmp_path),
    ]
    result = _call(args)
    assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.glob("synthetic_brain_*.nii.gz"))) == 2
    assert "Wrote 2 synthetic volumes" in result.stdout + result.stderr
    # existing outputs: a one-line error and a non-zero exit; --force overwrites
    again = _call(args)
    assert again.returncode != 0
    assert (
        again.stderr.strip()
        .splitlines()[-1]
        .startswith("dipy_synthesize_brain: error:")
    )
    assert "--force" in again.stderr
    # logs: no native start-up lines; progress on stdout, warnings on
    # stderr; --log_level ERROR leaves both empty on success
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    ages = args.index("age=65")
    older = [*args[:ages], "age=200", *args[ages + 1 :], "--force"]
    chatty = subprocess.run(older, capture_output=True, text=True, env=env)
    assert chatty.returncode == 0, chatty.stderr
    assert "INFO: Wrote 2 synthetic volumes" in chatty.stdout
    assert "WARNING" not in chatty.stdout
    assert chatty.stderr.strip().splitlines() == [
        "WARNING: age=200 is outside the training range [60, 65]: "
        "the model extrapolates"
    ]
    quiet = subprocess.run(
        [*args, "--force", "--log_level", "ERROR"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert quiet.returncode == 0 and (quiet.stdout, quiet.stderr) == ("", "")
    # bad input: one line on stderr, non-zero exit
    bad = _call(
        [
            script,
            "--model_file",
            model,
            "--num_samples",
            "0",
            "--out_dir",
            str(tmp_path / "x"),
        ]
    )
    assert bad.returncode != 0
    assert (
        "--num_samples should be an integer >= 1" in bad.stderr.strip().splitlines()[-1]
    )


def test_default_model_synthesizes_one_volume(tmp_path):
    """The embedded model loads and synthesises through the console script,
    drawing its covariates when none are given and refusing unknown ones."""
    from dipy_ext.data.default import default_model_path
    from dipy_ext.metrics.covariates import COVARIATES
    from dipy_ext.nn.diffusion import LatentDiffusion3D

    model = LatentDiffusion3D.load(default_model_path())
    assert list(model.condition_names) == list(COVARIATES)
    assert model.sampling["num_inference_steps"] >= 10
    result = _call(
        [
            _script("dipy_synthesize_brain"),
            "--num_samples",
            "1",
            "--num_inference_steps",
            "10",
            "--out_dir",
            str(tmp_path),
        ]
    )
    assert result.returncode == 0, result.stderr
    img = nib.load(tmp_path / "synthetic_brain_000.nii.gz")
    assert img.shape == model.output_shape
    assert img.header.get_sform(coded=True)[1] == 4  # MNI
    assert all(n in img.header["descrip"].item().decode() for n in COVARIATES)
    data = np.asarray(img.dataobj)
    assert data.max() > 0.5 and (data > 0.05).mean() > 0.1  # a brain, not empty
    bad = _call(
        [
            _script("dipy_synthesize_brain"),
            "--conditions",
            "age=60",
            "--out_dir",
            str(tmp_path / "c"),
        ]
    )
    assert bad.returncode != 0
    assert "brain_volume=<value>" in bad.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


def test_fetch_console_script_against_local_server(tmp_path):
    from http.server import ThreadingHTTPServer
    import threading

    from .test_fetcher import MD5, _Handler  # noqa: F401

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/good.tar.gz"
        result = _call(
            [
                _script("dipy_fetch_nfbs"),
                "--data_home",
                str(tmp_path),
                "--url",
                url,
                "--md5",
                MD5,
            ]
        )
        assert result.returncode == 0, result.stderr
        assert "NFBS: 2 subjects" in result.stdout + result.stderr
        bad = _call(
            [
                _script("dipy_fetch_nfbs"),
                "--data_home",
                str(tmp_path / "b"),
                "--url",
                url.replace("good", "corrupt"),
                "--md5",
                MD5,
            ]
        )
        assert bad.returncode != 0 and "md5" in bad.stderr
    finally:
        httpd.shutdown()


def test_vqvae_flow_patches_losses_and_heldout_report(t1_folder, tmp_path, dipy_log):
    common = {
        "mask_files": str(t1_folder / "*_mask.nii.gz"),
        "grid_shape": GRID,
        "voxel_size": (4.0,),
        "channels": (8, 16),
        "quantizer": "vq",
        "output_stage": "subpixel",
        "num_embeddings": 16,
        "embedding_dim": 4,
        "epochs": 1,
        "batch_size": 2,
        "validation_fraction": 0.34,
    }
    inputs = str(t1_folder / "*_T1w.nii.gz")
    with pytest.raises(ValueError, match="adversarial_loss should be one of"):
        TrainVQVAE3DFlow().run(
            inputs, adversarial_loss="wgan", out_dir=str(tmp_path / "a"), **common
        )
    assert not (tmp_path / "a" / "vqvae3d.npz").exists()
    TrainVQVAE3DFlow().run(
        inputs,
        patch_shape=(8,),
        ssim_loss_weight=0.5,
        adversarial_weight=0.05,
        out_dir=str(tmp_path / "b"),
        **common,
    )
    assert (tmp_path / "b" / "vqvae3d.npz").exists()
    assert "Held-out (2 volumes): PSNR" in dipy_log.text
    assert "sharpness ratio" in dipy_log.text


@pytest.mark.slow
def test_training_flow_checkpoints_keyed_recovered_and_logged(
    t1_folder, tmp_path, monkeypatch, dipy_log
):
    """An interrupted flow: other settings are refused, a corrupt backup is
    set aside, and the curves of the resumed run keep every epoch."""
    import keras

    from dipy_ext.workflows.checkpoints import read_history
    import dipy_ext.workflows.training_run as training

    class LoggerThatDies(keras.callbacks.CSVLogger):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt"
    args = {
        "input_files": str(t1_folder / "*_T1w.nii.gz"),
        "mask_files": str(t1_folder / "*_mask.nii.gz"),
        "grid_shape": GRID,
        "voxel_size": (4.0,),
        "channels": (8, 16),
        "quantizer": "vq",
        "output_stage": "subpixel",
        "num_embeddings": 16,
        "embedding_dim": 4,
        "epochs": 3,
        "batch_size": 2,
        "validation_fraction": 0.0,
        "checkpoint_dir": str(ckpt),
        "out_dir": str(tmp_path / "out"),
    }
    with monkeypatch.context() as m:
        m.setattr(
            training,
            "history_logger",
            lambda folder: LoggerThatDies(str(folder / "history.csv"), append=True),
        )
        with pytest.raises(KeyboardInterrupt):
            TrainVQVAE3DFlow().run(**args)
    assert len(read_history(ckpt)["loss"]) == 2
    # other settings: one line naming the difference, nothing touched
    with pytest.raises(
        ValueError,
        match=r"interrupted run with other settings \(voxel_size \[4.0\] -> \[3.0\]\)",
    ):
        TrainVQVAE3DFlow().run(**{**args, "voxel_size": (3.0,)})
    # the latest backup is damaged (say a full disk during its save)
    (ckpt / "backup" / "latest.weights.h5").write_bytes(b"\x89HDF\r\n garbage")
    TrainVQVAE3DFlow().run(**args)
    assert "latest backup was unreadable" in dipy_log.text
    assert (ckpt / "backup" / "latest.weights.h5.corrupt").exists() or not (
        ckpt / "backup"
    ).exists()
    history = read_history(ckpt)
    assert len(history["loss"]) == 3  # epochs of both runs, each once
    assert (tmp_path / "out" / "vqvae3d_training.png").stat().st_size > 0
    # --force with other settings clears the folder and trains afresh
    TrainVQVAE3DFlow(force=True).run(**{**args, "voxel_size": (3.0,), "epochs": 1})
    assert len(read_history(ckpt)["loss"]) == 1


def test_second_writer_into_one_folder_is_refused(trained_files, tmp_path):
    from dipy_ext.workflows.base import output_lock

    options = {
        "model_file": str(trained_files / "latent_diffusion3d.npz"),
        "num_samples": 1,
        "num_inference_steps": 2,
        "conditions": ["age=70", "sex=1"],
        "out_dir": str(tmp_path),
    }
    with output_lock(tmp_path, "synthetic_brain", "test"):  # a run in progress
        with pytest.raises(
            ValueError, match="another dipy_synthesize_brain is writing"
        ):
            SynthesizeBrainFlow().run(**options)
        assert not list(tmp_path.glob("*.nii.gz"))
    SynthesizeBrainFlow().run(**options)  # once it is done, the folder is free
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*"))


def test_training_flows_distribute_option(t1_folder, tmp_path):
    # one replica here, but the strategy path runs: the network is rebuilt
    # in its scope, trained there and its weights brought back
    out = tmp_path / "mirrored"
    TrainVQVAE3DFlow().run(
        str(t1_folder / "*_T1w.nii.gz"),
        grid_shape=GRID,
        voxel_size=(4.0,),
        channels=(8, 16),
        quantizer="vq",
        output_stage="subpixel",
        num_embeddings=16,
        embedding_dim=4,
        epochs=1,
        batch_size=2,
        validation_fraction=0,
        distribute="mirrored",
        out_dir=str(out),
    )
    from dipy_ext.nn import VQVAE3D

    vq = VQVAE3D.load(out / "vqvae3d.npz")
    fresh = VQVAE3D(**vq.get_config(), seed=0)
    changed = [
        np.abs(a - b).max()
        for a, b in zip(vq.decoder.get_weights(), fresh.decoder.get_weights())
    ]
    assert max(changed) > 0  # trained weights came back from the strategy's copy
    with pytest.raises(ValueError, match="distribute should be one of"):
        TrainVQVAE3DFlow().run(
            str(t1_folder / "*_T1w.nii.gz"), distribute="gpus", out_dir=str(out)
        )


def test_log_level_reaches_our_messages():
    import logging

    from dipy_ext.workflows.cli import _log_through_root

    dipy_logger = logging.getLogger("dipy")
    saved = (list(dipy_logger.handlers), dipy_logger.level, dipy_logger.propagate)
    try:
        assert _log_through_root(["--log_level", "WARNING"]) == logging.WARNING
        assert not dipy_logger.isEnabledFor(logging.INFO)
        assert dipy_logger.propagate and not dipy_logger.handlers  # to --log_file
        assert _log_through_root(["--log_level", "debug"]) == logging.DEBUG
        with pytest.raises(ValueError, match="--log_level should be one of"):
            _log_through_root(["--log_level", "loud"])
        assert _log_through_root([]) == logging.INFO
    finally:
        dipy_logger.handlers[:] = saved[0]
        dipy_logger.setLevel(saved[1])
        dipy_logger.propagate = saved[2]


def test_doc_sections_fills_placeholders_at_their_indent():
    @doc_sections(shared="a : int\n    The a.\n")
    def documented():
        """Title.

        Parameters
        ----------
        {shared}
        {unknown}
        b : int
        """

    assert inspect.getdoc(documented) == (
        "Title.\n\nParameters\n----------\na : int\n    The a.\n{unknown}\nb : int"
    )


def test_training_commands_describe_their_shared_options():
    from dipy.workflows.base import IntrospectiveArgumentParser

    for flow in (TrainVQVAE3DFlow(), TrainLatentDiffusion3DFlow()):
        parser = IntrospectiveArgumentParser()
        parser.add_workflow(flow)
        helps = {a.dest: a.help for a in parser._actions}
        assert "TF_CONFIG" in helps["distribute"]
        assert "resumes" in helps["checkpoint_dir"]
        assert helps["out_curves"].startswith("PNG of the training curves")
        assert "{run_options}" not in parser.description


def test_evaluation_refuses_max_pairs_below_one_and_writes_valid_json(tmp_path):
    from dipy_ext.workflows.evaluation import _json_safe

    for bad in (0, -5):
        with pytest.raises(ValueError, match="--max_pairs should be an integer >= 1"):
            EvaluateSynthesisFlow().run("a", "b", max_pairs=bad, out_dir=str(tmp_path))
    assert not list(tmp_path.iterdir())  # refused before any output
    report = {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2}}
    assert json.loads(json.dumps(_json_safe(report))) == {
        "a": None,
        "b": [1.0, None],
        "c": {"d": 2},
    }


@pytest.mark.parametrize("which", ["real", "synthetic"])
def test_evaluation_checks_volumes_as_training_does(tmp_path, which):
    """A constant or a tiny volume in either set: one line naming the file,
    nothing written, no output folder made."""
    sets = {}
    for seed, name in enumerate(("real", "synthetic")):
        folder = tmp_path / name
        folder.mkdir()
        for i, v in enumerate(phantom_cohort(2, GRID, rng=seed)):
            nib.save(nib.Nifti1Image(v, np.eye(4)), folder / f"{name}{i}.nii.gz")
        sets[name] = folder
    out = tmp_path / "out"
    bad = sets[which] / "bad.nii.gz"
    for volume, message in (
        (np.full(GRID, 0.5, np.float32), "'.*bad.nii.gz' is constant"),
        (np.random.default_rng(0).random((3, 3, 3)), "'.*bad.nii.gz' is 3x3x3 voxels"),
    ):
        nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)), bad)
        with pytest.raises(ValueError, match=message):
            EvaluateSynthesisFlow().run(
                str(sets["real"]), str(sets["synthetic"]), out_dir=str(out)
            )
        assert not out.exists()


def test_dipy_output_options_that_change_nothing_are_refused():
    from dipy_ext.workflows.cli import _refuse_unused_dipy_options

    _refuse_unused_dipy_options(["--out_dir", "x", "--out_strat", "absolute"])
    for argv in (["--out_strat", "append"], ["--out_strat=prepend"], ["--mix_names"]):
        with pytest.raises(ValueError, match="--out_strat and --mix_names are not"):
            _refuse_unused_dipy_options(argv)


def test_console_script_refuses_bad_log_level_and_out_strat(tmp_path):
    script = _script("dipy_evaluate_synthesis")
    for extra, message in (
        (["--log_level", "LOUD"], "--log_level should be one of"),
        (["--out_strat", "append"], "--out_strat and --mix_names are not supported"),
    ):
        result = _call([script, "a", "b", "--out_dir", str(tmp_path), *extra])
        assert result.returncode != 0
        assert message in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


def test_failed_model_write_loses_no_training(
    t1_folder, tmp_path, monkeypatch, dipy_log
):
    """Issue 19: the backup is kept until the model file is in place; the
    rerun after a failed write (a full disk) writes the model, training no
    epoch again."""
    from dipy_ext.nn.vqvae import VQVAE3D
    from dipy_ext.workflows.checkpoints import read_history

    args = {
        "input_files": str(t1_folder / "*_T1w.nii.gz"),
        "mask_files": str(t1_folder / "*_mask.nii.gz"),
        "grid_shape": GRID,
        "voxel_size": (4.0,),
        "channels": (8, 16),
        "quantizer": "vq",
        "output_stage": "subpixel",
        "num_embeddings": 16,
        "embedding_dim": 4,
        "epochs": 2,
        "batch_size": 2,
        "validation_fraction": 0.0,
        "out_dir": str(tmp_path / "out"),
    }

    def full_disk(self, path, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    with monkeypatch.context() as m:
        m.setattr(VQVAE3D, "save", full_disk)
        with pytest.raises(ValueError) as failed:
            TrainVQVAE3DFlow().run(**args)
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write '{tmp_path / 'out' / 'vqvae3d.npz'}'")
    assert "No space left" in message and "without training again" in message
    ckpt = tmp_path / "out" / "vqvae3d.npz.checkpoints"
    assert (ckpt / "backup").exists()
    assert len(read_history(ckpt)["loss"]) == 2
    import keras

    import dipy_ext.workflows.training_run as training

    epochs_run = []

    class CountingLogger(keras.callbacks.CSVLogger):
        def on_epoch_end(self, epoch, logs=None):
            epochs_run.append(epoch)
            super().on_epoch_end(epoch, logs)

    monkeypatch.setattr(
        training,
        "history_logger",
        lambda folder: CountingLogger(str(folder / "history.csv"), append=True),
    )
    TrainVQVAE3DFlow().run(**args)
    assert (tmp_path / "out" / "vqvae3d.npz").exists()
    assert epochs_run == []  # restored at its last epoch: nothing retrained
    assert not ckpt.exists()  # removed once the model file was written


def test_training_flow_quantizer_and_output_stage_options(t1_folder, tmp_path):
    from dipy_ext.nn.vqvae import VQVAE3D

    TrainVQVAE3DFlow().run(
        str(t1_folder / "*_T1w.nii.gz"),
        grid_shape=GRID,
        voxel_size=(4.0,),
        channels=(8, 16),
        quantizer="fsq",
        fsq_levels=(4, 4, 3),
        epochs=1,
        batch_size=2,
        validation_fraction=0.0,
        out_dir=str(tmp_path),
    )
    vq = VQVAE3D.load(tmp_path / "vqvae3d.npz")
    assert vq.quantizer.spec() == {"kind": "fsq", "levels": [4, 4, 3]}
    assert vq.embedding_dim == 3 and vq.output_stage == "interpolate"


def _synthesis_options(trained_files, out_dir, **changes):
    return {
        "model_file": str(trained_files / "latent_diffusion3d.npz"),
        "num_samples": 3,
        "num_inference_steps": 2,
        "batch_size": 2,
        "out_dir": str(out_dir),
        **changes,
    }


def test_synthesis_set_is_one_set(trained_files, tmp_path):
    """Two prefixes share the mosaic's name: the second run is refused, not
    left to replace the first one's mosaic; --force replaces a whole set,
    numbered with any width."""
    from dipy_ext.workflows.base import output_lock

    options = _synthesis_options(trained_files, tmp_path, num_samples=2)
    SynthesizeBrainFlow().run(**options)
    mosaic = (tmp_path / "synthetic_brains.png").read_bytes()
    with pytest.raises(ValueError, match="synthetic_brains.png' exists"):
        SynthesizeBrainFlow().run(**options, out_prefix="other")
    assert not list(tmp_path.glob("other*"))
    with output_lock(tmp_path, "synthetic_brains.png", "test"):  # still writing
        with pytest.raises(ValueError, match="another dipy_synthesize_brain"):
            SynthesizeBrainFlow(force=True).run(**options, out_prefix="other")
    assert (tmp_path / "synthetic_brains.png").read_bytes() == mosaic
    # an earlier set of 1001 volumes was numbered with four digits
    (tmp_path / "synthetic_brain_1000.nii.gz").write_bytes(b"old")
    with pytest.raises(ValueError, match="exists.*--force"):
        SynthesizeBrainFlow().run(**options)
    SynthesizeBrainFlow(force=True).run(**options)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "synthetic_brain_000.nii.gz",
        "synthetic_brain_001.nii.gz",
        "synthetic_brains.png",
    ]


@pytest.mark.slow
def test_failed_synthesis_leaves_no_set_and_resumes(
    trained_files, tmp_path, monkeypatch
):
    """A disk that fills up after the first volume: one line naming the
    file, no volume or mosaic in the folder; the same command run again
    keeps the staged volume and finishes with the volumes of an
    uninterrupted run."""
    import errno

    import dipy_ext.workflows.synthesis as synthesis

    reference = tmp_path / "reference"
    SynthesizeBrainFlow().run(**_synthesis_options(trained_files, reference))
    out = tmp_path / "out"
    options = _synthesis_options(trained_files, out, batch_size=1)
    real_save, calls = synthesis.save_nifti_atomic, []

    def full_after_one(path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(synthesis, "save_nifti_atomic", full_after_one)
    with pytest.raises(ValueError) as failed:
        SynthesizeBrainFlow().run(**options)
    message = str(failed.value)
    assert "\n" not in message and "synthetic_brain_001.nii.gz" in message
    assert "no space left" in message and "1 volumes already written" in message
    assert [p.name for p in out.iterdir()] == [".synthetic_brain.partial"]
    (out / ".synthetic_brain.partial" / ".x.nii.gz.part").write_bytes(b"killed")
    monkeypatch.undo()
    calls.clear()
    monkeypatch.setattr(
        synthesis,
        "save_nifti_atomic",
        lambda path, *a, **k: calls.append(path) or real_save(path, *a, **k),
    )
    SynthesizeBrainFlow().run(**options)
    assert [Path(p).name for p in calls] == [
        "synthetic_brain_001.nii.gz",
        "synthetic_brain_002.nii.gz",
    ]
    for i in range(3):
        name = f"synthetic_brain_00{i}.nii.gz"
        npt.assert_allclose(data_of(out / name), data_of(reference / name), atol=1e-4)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in reference.iterdir()
    )
    # other settings do not reuse a staged volume
    other = {**options, "out_prefix": "b", "out_mosaic": "b.png"}
    monkeypatch.setattr(synthesis, "save_nifti_atomic", full_after_one)
    calls.clear()
    with pytest.raises(ValueError, match="no space left"):
        SynthesizeBrainFlow().run(**other)
    calls.clear()
    with pytest.raises(ValueError, match="no space left"):
        SynthesizeBrainFlow().run(**{**other, "seed": 1})
    assert [Path(p).name for p in calls] == ["b_000.nii.gz", "b_001.nii.gz"]


def test_synthesis_refuses_what_cannot_fit(trained_files, tmp_path, monkeypatch):
    import dipy_ext.workflows.sample_set as sample_set

    out = tmp_path / "new" / "deeper"
    huge = _synthesis_options(trained_files, out, num_samples=10**9, batch_size=10**9)
    with pytest.raises(ValueError, match="--batch_size 1000000000 needs about"):
        SynthesizeBrainFlow().run(**huge)
    with pytest.raises(ValueError, match="1000000000 more volumes need about"):
        SynthesizeBrainFlow().run(**{**huge, "batch_size": 2})
    assert not (tmp_path / "new").exists()  # a refused run leaves no folder

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        sample_set.shutil, "disk_usage", lambda p: usage._replace(free=10_000)
    )
    with pytest.raises(ValueError, match="has 0.00 GB free"):
        SynthesizeBrainFlow().run(**_synthesis_options(trained_files, out))
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"seed": -1}, "--seed should be an integer >= 0, got -1"),
        ({"num_samples": 2.5}, "--num_samples should be an integer >= 1"),
        ({"batch_size": 0}, "--batch_size should be an integer >= 1"),
        ({"out_prefix": "sub/dir/x"}, "--out_prefix should be a file name prefix"),
    ],
)
def test_synthesis_options_checked_first(tmp_path, changes, message):
    options = {"model_file": str(tmp_path / "missing.npz"), "out_dir": str(tmp_path)}
    with pytest.raises(ValueError, match=message):  # before the model is read
        SynthesizeBrainFlow().run(**{**options, **changes})
    assert not list(tmp_path.iterdir())
