"""Samplers: one interface, checked against each other and against exact ODEs."""

import numpy as np
import numpy.testing as npt
import pytest

from dipy_ext.nn.samplers import (
    SAMPLERS,
    DDIMSampler,
    DDPMSampler,
    DPMSolverSampler,
    make_sampler,
    x0_and_eps,
)
from dipy_ext.nn.schedules import NoiseSchedule


class _ConstantRng:
    """Stands in for a numpy Generator: 'random' normals of one value."""

    def __init__(self, value):
        self.value = value

    def standard_normal(self, shape):
        return np.full(shape, self.value)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "scaled_linear"])
def test_ddim_eta1_all_steps_is_ddpm_posterior(schedule):
    """DDIM with eta=1 over consecutive steps has DDPM's posterior mean/variance."""
    s = NoiseSchedule(100, schedule, "epsilon")
    ddim = DDIMSampler(s, eta=1.0).set_timesteps(100)
    ddpm = DDPMSampler(s).set_timesteps()
    rng = np.random.default_rng(2)
    x_t = rng.standard_normal((5,))
    eps = rng.standard_normal((5,))
    for t in (1, 10, 50, 99):
        x0, _ = x0_and_eps(s, x_t, eps, t)
        mean, var = ddpm.posterior(x0, x_t, t)
        # DDIM's step is mean + sigma * z: recover both with z = 0 and z = 1
        a = ddim.step(eps, t, x_t, _ConstantRng(0.0))
        b = ddim.step(eps, t, x_t, _ConstantRng(1.0))
        npt.assert_allclose(a, mean, rtol=1e-5, atol=1e-6)
        npt.assert_allclose((b - a) ** 2, var, rtol=1e-4, atol=1e-7)
        npt.assert_allclose(ddpm.step(eps, t, x_t, _ConstantRng(1.0)), b, rtol=1e-5)


def test_timesteps_and_last_step_returns_x0():
    s = NoiseSchedule(100, "cosine", "v")
    for cls in (DDIMSampler, DPMSolverSampler):
        sampler = cls(s).set_timesteps(10)
        steps = sampler.timesteps
        assert steps[0] == 99 and steps[-1] == 0 and len(steps) == 10
        assert np.all(np.diff(steps) < 0)
        x_t, out = np.ones(3), np.full(3, 0.2)
        x0, _ = x0_and_eps(s, x_t, out, 0)
        npt.assert_allclose(sampler.step(out, 0, x_t), x0, rtol=1e-6)
    assert len(DDPMSampler(s).set_timesteps().timesteps) == 100


def test_ddpm_last_step_has_no_noise():
    s = NoiseSchedule(10, "linear", "x0")
    ddpm = DDPMSampler(s).set_timesteps()
    x = ddpm.step(np.zeros(4), 0, np.ones(4), _ConstantRng(5.0))
    mean, _ = ddpm.posterior(np.zeros(4), np.ones(4), 0)
    npt.assert_allclose(x, mean)


def _run(sampler, denoise, x, steps):
    sampler.set_timesteps(steps)
    for t in sampler.timesteps:
        x = sampler.step(denoise(x, t), int(t), x)
    return x


@pytest.mark.parametrize("prediction_type", ["epsilon", "v", "x0"])
def test_deterministic_samplers_exact_for_one_point(prediction_type):
    """For data that is one point, the exact network output takes the ODE there."""
    s = NoiseSchedule(1000, "cosine", prediction_type)
    point = np.array([0.3, -1.2, 2.0])

    def oracle(x, t):
        a = s.alphas_cumprod[int(t)]
        eps = (x - np.sqrt(a) * point) / np.sqrt(1 - a)
        return s.target(point, eps, int(t))

    noise = np.random.default_rng(0).standard_normal(3)
    for sampler in (DDIMSampler(s), DPMSolverSampler(s)):
        npt.assert_allclose(_run(sampler, oracle, noise, 7), point, atol=1e-5)


def test_dpm_solver_beats_ddim_in_few_steps():
    """Gaussian data: the ODE is known; the second-order solver is closer."""
    s = NoiseSchedule(1000, "cosine", "v")
    std = 0.5

    def oracle(x, t):
        a = s.alphas_cumprod[int(t)]
        x0 = np.sqrt(a) * std**2 / (a * std**2 + 1 - a) * x
        eps = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)
        return s.target(x0, eps, int(t))

    noise = np.random.default_rng(1).standard_normal(1000)
    reference = _run(DDIMSampler(s), oracle, noise, 1000)
    for steps in (10, 20):
        err_ddim = np.abs(_run(DDIMSampler(s), oracle, noise, steps) - reference).max()
        err_dpm = np.abs(
            _run(DPMSolverSampler(s), oracle, noise, steps) - reference
        ).max()
        assert err_dpm < 0.5 * err_ddim, (steps, err_dpm, err_ddim)


def test_make_sampler_and_bad_options():
    s = NoiseSchedule(50)
    assert sorted(SAMPLERS) == ["ddim", "ddpm", "dpm_solver"]
    assert isinstance(make_sampler("dpm_solver", s), DPMSolverSampler)
    assert make_sampler("ddim", s, eta=0.5).eta == 0.5
    with pytest.raises(ValueError, match="sampler should be one of"):
        make_sampler("euler", s)
    for eta in (float("nan"), float("inf"), -1.0, 1.5):
        with pytest.raises(ValueError, match="eta should be a number from 0 to 1"):
            make_sampler("ddim", s, eta=eta)
    with pytest.raises(
        ValueError, match="num_inference_steps should be an integer in 1..50"
    ):
        DDIMSampler(s).set_timesteps(51)
    # DDPM takes every training step whatever is asked (one loop for all)
    assert len(DDPMSampler(s).set_timesteps(10).timesteps) == 50
    with pytest.raises(ValueError, match="needs rng"):
        DDIMSampler(s, eta=1.0).set_timesteps(5).step(np.zeros(2), 49, np.zeros(2))


def _fingerprint(x):
    """Sums that change with any bit of the latents (float64, fixed order)."""
    x = np.asarray(x, np.float64)
    w = np.random.default_rng(0).standard_normal(x.shape[1:])
    return [float(x.sum()), float((x * x).sum()), *[float((s * w).sum()) for s in x]]


@pytest.mark.parametrize(
    "name, n, settings",
    [
        ("ddim", 2, {"sampler": "ddim", "num_inference_steps": 10, "eta": 1.0}),
        ("dpm_solver", 2, {"sampler": "dpm_solver", "num_inference_steps": 10}),
        pytest.param("ddpm", 1, {"sampler": "ddpm"}, marks=pytest.mark.slow),
    ],
)
def test_shipped_model_samples_as_before_the_sampling_loop_moved(name, n, settings):
    """Issue 20: one generic loop (inferer.run_sampler) gives the latents the
    model's own loop gave, bit for bit (fingerprints taken before the move,
    batch size 1 so each sampler restarts its state between samples)."""
    import json
    from pathlib import Path

    pytest.importorskip("keras")
    from dipy_ext.data.default import default_model_path
    from dipy_ext.nn.diffusion import LatentDiffusion3D

    expected = json.loads(
        (Path(__file__).parent / "data" / "sampler_fingerprints.json").read_text()
    )[name]
    ldm = LatentDiffusion3D.load(default_model_path())
    latents = ldm.sample_latents(n, seed=7, batch_size=1, progress=False, **settings)
    assert _fingerprint(latents) == expected
