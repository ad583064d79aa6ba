"""What the training commands promise: options checked before any work, one
run per folder, a completed run said to be one, a full disk during a backup
in one line with the backup before it intact, and an explicit settings
record that keys the checkpoint folder."""

import inspect
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("keras")

from dipy_ext.workflows.training import (  # noqa: E402
    TrainLatentDiffusion3DFlow,
    TrainVQVAE3DFlow,
)
from dipy_ext.workflows.training_run import PLACEMENT  # noqa: E402

TINY = {
    "grid_shape": (16, 16, 16),
    "voxel_size": (4.0,),
    "channels": (8, 16),
    "quantizer": "vq",
    "output_stage": "subpixel",
    "num_embeddings": 16,
    "embedding_dim": 4,
    "epochs": 1,
    "batch_size": 2,
    "validation_fraction": 0.0,
}


def _tiny_run(t1_folder, out, **changes):
    return {
        "input_files": str(t1_folder / "*_T1w.nii.gz"),
        **TINY,
        "out_dir": str(out),
        **changes,
    }


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"num_embeddings": 0}, "num_embeddings should be"),
        ({"epochs": 0}, "--epochs should be an integer >= 1, got 0"),
        ({"batch_size": -2}, "--batch_size should be an integer >= 1"),
        ({"seed": -1}, "--seed should be an integer >= 0, got -1"),
        ({"learning_rate": float("nan")}, "--learning_rate should be a finite"),
        ({"voxel_size": (float("nan"),)}, "--voxel_size should be positive"),
        ({"validation_fraction": 1.0}, "--validation_fraction should be below 1"),
        ({"adversarial_loss": "wgan"}, "adversarial_loss should be one of"),
        ({"adversarial_start": -5}, "--adversarial_start should be an integer >= -1"),
        ({"patch_shape": (6, 6, 6)}, "patch_shape should be 3 positive multiples"),
        ({"grid_shape": (16, 16, 15)}, "input_shape should be 3 ints divisible"),
    ],
)
def test_bad_training_option_is_refused_before_any_work(
    t1_folder, tmp_path, changes, message
):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message) as refused:
        TrainVQVAE3DFlow().run(**_tiny_run(t1_folder, out, **changes))
    assert "\n" not in str(refused.value) and "np." not in str(refused.value)
    assert not out.exists()  # no checkpoint folder, no settings, no output folder


def test_bad_diffusion_option_is_refused_before_any_work(
    trained_files, t1_folder, tmp_path
):
    out = tmp_path / "out"
    for changes, message in [
        ({"ema_momentum": 2.0}, "--ema_momentum should be a finite number in"),
        ({"epochs": 1.5}, "--epochs should be an integer"),
        ({"schedule": "cubic"}, "schedule"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrainLatentDiffusion3DFlow().run(
                str(t1_folder / "*_T1w.nii.gz"),
                str(trained_files / "vqvae3d.npz"),
                **{"epochs": 1, "out_dir": str(out), **changes},
            )
        assert not out.exists()


def _hold_lock(folder, name, what):
    """Another process (a real one) holding a training run's lock."""
    code = textwrap.dedent(
        f"""
        import time
        from dipy_ext.workflows.base import output_lock
        with output_lock({str(folder)!r}, {name!r}, "dipy_train_vqvae3d",
                         what={what!r}):
            print("held", flush=True)
            time.sleep(120)
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_second_training_into_the_same_folders_is_refused_at_once(t1_folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = _hold_lock(out, "vqvae3d.npz", "model")
    try:
        with pytest.raises(
            ValueError, match="another dipy_train_vqvae3d holds the model"
        ):
            TrainVQVAE3DFlow().run(**_tiny_run(t1_folder, out))
    finally:
        holder.kill()
        holder.wait()
    assert [p.name for p in out.iterdir()] == [".vqvae3d.npz.lock"]  # the holder's
    # another output folder, but the same checkpoint folder
    ckpt = tmp_path / "ckpt"
    holder = _hold_lock(tmp_path, "ckpt", "checkpoint folder")
    try:
        with pytest.raises(ValueError, match="holds the checkpoint folder"):
            TrainVQVAE3DFlow().run(
                **_tiny_run(t1_folder, tmp_path / "b", checkpoint_dir=str(ckpt))
            )
    finally:
        holder.kill()
        holder.wait()
    assert not ckpt.exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_completed_run_is_not_called_interrupted(t1_folder, tmp_path):
    ckpt = tmp_path / "ckpt"
    options = _tiny_run(t1_folder, tmp_path / "out", checkpoint_dir=str(ckpt))
    TrainVQVAE3DFlow().run(**options)
    other = {**options, "learning_rate": 5e-4, "out_dir": str(tmp_path / "b")}
    with pytest.raises(ValueError, match="holds a completed run with other settings"):
        TrainVQVAE3DFlow().run(**other)
    # the same command again (the model replaced): a fresh run, not a resume
    TrainVQVAE3DFlow(force=True).run(**options)
    assert (ckpt / "history.csv").read_text().count("\n") == 2  # header + 1 epoch


def test_full_disk_during_a_backup_is_one_line_and_keeps_the_last(
    t1_folder, tmp_path, monkeypatch
):
    import keras

    import dipy_ext.nn.distribute as distribute

    ckpt = tmp_path / "ckpt"
    options = _tiny_run(t1_folder, tmp_path / "out", checkpoint_dir=str(ckpt))
    options["epochs"] = 3
    real_usage, saves = distribute.shutil.disk_usage, []

    def fills_after_two(path):
        saves.append(path)
        usage = real_usage(path)
        return usage._replace(free=1000) if len(saves) > 2 else usage

    monkeypatch.setattr(distribute.shutil, "disk_usage", fills_after_two)
    with pytest.raises(ValueError) as full:
        TrainVQVAE3DFlow().run(**options)
    message = str(full.value)
    assert "\n" not in message
    assert f"no space for the training backup in '{ckpt / 'backup'}'" in message
    backup = ckpt / "backup"
    # two epochs backed up (Keras counts the epochs done)
    assert '"epoch": 2' in (backup / "training_metadata.json").read_text()
    monkeypatch.undo()
    resumed = []
    monkeypatch.setattr(
        keras.callbacks.Callback,
        "on_epoch_begin",
        lambda self, epoch, logs=None: resumed.append(epoch),
    )
    TrainVQVAE3DFlow().run(**options)
    assert sorted(set(resumed)) == [2]  # only the epoch that was not backed up


@pytest.mark.parametrize("flow", [TrainVQVAE3DFlow, TrainLatentDiffusion3DFlow])
def test_every_option_is_in_the_settings_record_or_says_where(flow, monkeypatch):
    """The record is the run's arguments with their defaults, not whatever
    locals exist: every option joins the checkpoint's identity unless it
    says where files go or on which devices (PLACEMENT)."""
    import dipy_ext.workflows.training as training
    from dipy_ext.workflows.training_run import identity

    parameters = list(inspect.signature(flow.run).parameters)[1:]
    assert set(PLACEMENT) <= set(parameters)
    seen = []

    def stop(options):
        seen.append(identity(options))
        raise KeyboardInterrupt  # before any work

    monkeypatch.setattr(training, "_check_run_options", stop)
    with pytest.raises(KeyboardInterrupt):
        flow().run(*["x"] * (2 if flow is TrainLatentDiffusion3DFlow else 1))
    assert sorted(seen[0]) == sorted(set(parameters) - set(PLACEMENT))
    assert seen[0]["epochs"] == inspect.signature(flow.run).parameters["epochs"].default


def test_changed_setting_invalidates_the_checkpoint_and_cache(t1_folder, tmp_path):
    """Each kind of setting (grid, optimisation, architecture, seed, input
    files) keys the checkpoint folder, which holds the cohort cache: an
    interrupted run with another value is refused, not resumed; where files
    go does not count."""
    from types import SimpleNamespace

    from dipy_ext.workflows.checkpoints import claim_folder, run_settings
    from dipy_ext.workflows.training_run import identity

    parameters = inspect.signature(TrainVQVAE3DFlow.run).parameters
    defaults = {
        k: p.default
        for k, p in parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    base = _tiny_run(t1_folder, tmp_path / "out")

    def settings(**changes):
        options = SimpleNamespace(**{**defaults, **base, **changes})
        return run_settings(identity(options), inputs=[options.input_files])

    ckpt = tmp_path / "ckpt"
    claim_folder(ckpt, settings(), force=False)
    (ckpt / "history.csv").write_text("epoch,loss\n0,1.0\n")  # progress
    claim_folder(ckpt, settings(out_dir=str(tmp_path / "elsewhere")), force=False)
    for changes in (
        {"voxel_size": (3.0,)},
        {"learning_rate": 5e-4},
        {"quantizer": "fsq"},
        {"seed": 1},
        {"input_files": str(t1_folder / "sub[0-4]_T1w.nii.gz")},
    ):
        with pytest.raises(ValueError, match="interrupted run with other settings"):
            claim_folder(ckpt, settings(**changes), force=False)
