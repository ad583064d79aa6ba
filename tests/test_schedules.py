import numpy as np
import numpy.testing as npt
import pytest

from dipy_ext.nn.schedules import NoiseSchedule, guided, make_betas


def test_linear_betas_and_alphas_cumprod():
    betas = make_betas("linear", 1000)
    npt.assert_allclose(betas[[0, -1]], [1e-4, 0.02])
    s = NoiseSchedule(1000, "linear", "epsilon")
    npt.assert_allclose(s.alphas_cumprod, np.cumprod(1 - np.linspace(1e-4, 0.02, 1000)))
    # the well-known end point of DDPM's schedule: a_T ~ 4.0e-5
    npt.assert_allclose(s.alphas_cumprod[-1], 4.036e-5, rtol=1e-2)


def test_linear_betas_scale_with_timesteps():
    npt.assert_allclose(make_betas("linear", 100)[[0, -1]], [1e-3, 0.2])
    npt.assert_allclose(
        make_betas("linear", 10, beta_start=0.1, beta_end=0.2)[[0, -1]], [0.1, 0.2]
    )


def test_scaled_linear_betas():
    betas = make_betas("scaled_linear", 1000)
    npt.assert_allclose(betas[[0, -1]], [0.0015, 0.0205])
    npt.assert_allclose(
        np.sqrt(betas[500]), np.linspace(np.sqrt(0.0015), np.sqrt(0.0205), 1000)[500]
    )


def test_cosine_alphas_cumprod_closed_form():
    T, s = 1000, 0.008
    sched = NoiseSchedule(T, "cosine")
    t = np.arange(1, T + 1)
    f = (
        np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
        / np.cos(s / (1 + s) * np.pi / 2) ** 2
    )
    # equal wherever the 0.999 clip of the betas did not act (all but the end)
    npt.assert_allclose(sched.alphas_cumprod[:-1], f[:-1], rtol=1e-10)
    assert sched.betas.max() <= 0.999


def test_bad_schedule_and_prediction():
    with pytest.raises(ValueError, match="schedule should be one of"):
        make_betas("quadratic", 10)
    with pytest.raises(ValueError, match="prediction_type"):
        NoiseSchedule(10, "cosine", "score")
    with pytest.raises(ValueError, match="num_inference_steps"):
        NoiseSchedule(10).ddim_timesteps(11)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v", "x0"])
def test_perfect_prediction_recovers_x0_and_noise(prediction_type):
    s = NoiseSchedule(100, "cosine", prediction_type)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((3, 4, 4, 4, 2))
    noise = rng.standard_normal(x0.shape)
    t = np.array([0, 50, 99])
    x_t = s.q_sample(x0, noise, t)
    x0_hat, eps_hat = s.predict_x0_eps(x_t, s.target(x0, noise, t), t)
    npt.assert_allclose(x0_hat, x0, atol=1e-8)
    npt.assert_allclose(eps_hat, noise, atol=1e-6)


def test_ops_versions_match_numpy():
    keras = pytest.importorskip("keras")
    s = NoiseSchedule(50, "cosine", "v")
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((2, 3, 3, 3, 1)).astype(np.float32)
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    t = np.array([3, 40])
    npt.assert_allclose(
        keras.ops.convert_to_numpy(s.q_sample_ops(x0, noise, t)),
        s.q_sample(x0, noise, t),
        rtol=1e-5,
        atol=1e-6,
    )
    npt.assert_allclose(
        keras.ops.convert_to_numpy(s.target_ops(x0, noise, t)),
        s.target(x0, noise, t),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("schedule", ["linear", "cosine", "scaled_linear"])
def test_ddim_eta1_all_steps_is_ddpm_posterior(schedule):
    """DDIM with eta=1 over consecutive steps has DDPM's posterior mean/variance."""
    s = NoiseSchedule(100, schedule, "epsilon")
    rng = np.random.default_rng(2)
    x_t = rng.standard_normal((5,))
    eps = rng.standard_normal((5,))
    for t in (1, 10, 50, 99):
        x0, _ = s.predict_x0_eps(x_t, eps, t)
        mean, var = s.posterior(x0, x_t, t)
        # DDIM's step is mean + sigma * z: recover both with z = 0 and z = 1
        a = s.ddim_step(eps, t, t - 1, x_t, eta=1.0, rng=_ConstantRng(0.0))
        b = s.ddim_step(eps, t, t - 1, x_t, eta=1.0, rng=_ConstantRng(1.0))
        npt.assert_allclose(a, mean, rtol=1e-10, atol=1e-12)
        npt.assert_allclose((b - a) ** 2, var, rtol=1e-8)
        # and DDPM's own step with the same noise matches
        c = s.ddpm_step(eps, t, x_t, _ConstantRng(1.0))
        npt.assert_allclose(c, b, rtol=1e-6)


class _ConstantRng:
    """Stands in for a numpy Generator: 'random' normals of one value."""

    def __init__(self, value):
        self.value = value

    def standard_normal(self, shape):
        return np.full(shape, self.value)


def test_ddim_deterministic_and_last_step_returns_x0():
    s = NoiseSchedule(100, "cosine", "v")
    steps = s.ddim_timesteps(10)
    assert steps[0] == 99 and steps[-1] == 0 and len(steps) == 10
    assert np.all(np.diff(steps) < 0)
    x_t = np.ones(3)
    out = np.full(3, 0.2)
    x0, _ = s.predict_x0_eps(x_t, out, 0)
    npt.assert_allclose(s.ddim_step(out, 0, -1, x_t), x0)
    npt.assert_allclose(s.ddim_step(out, 50, 30, x_t), s.ddim_step(out, 50, 30, x_t))


def test_ddpm_last_step_has_no_noise():
    s = NoiseSchedule(10, "linear", "x0")
    x = s.ddpm_step(np.zeros(4), 0, np.ones(4), _ConstantRng(5.0))
    mean, _ = s.posterior(np.zeros(4), np.ones(4), 0)
    npt.assert_allclose(x, mean)


def test_guidance():
    npt.assert_allclose(guided(np.array([2.0]), np.array([1.0]), 3.0), [4.0])
    npt.assert_allclose(guided(np.array([2.0]), np.array([1.0]), 1.0), [2.0])
