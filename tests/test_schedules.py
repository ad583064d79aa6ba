import numpy as np
import numpy.testing as npt
import pytest

from dipy_ext.nn.samplers import x0_and_eps
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


@pytest.mark.parametrize("prediction_type", ["epsilon", "v", "x0"])
def test_perfect_prediction_recovers_x0_and_noise(prediction_type):
    s = NoiseSchedule(100, "cosine", prediction_type)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((3, 4, 4, 4, 2))
    noise = rng.standard_normal(x0.shape)
    t = np.array([0, 50, 99])
    x_t = s.q_sample(x0, noise, t)
    target = s.target(x0, noise, t)
    for i in range(3):  # one timestep per sample
        x0_hat, eps_hat = x0_and_eps(s, x_t[i], target[i], t[i])
        npt.assert_allclose(x0_hat, x0[i], atol=1e-8)
        npt.assert_allclose(eps_hat, noise[i], atol=1e-6)


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


def test_guidance():
    npt.assert_allclose(guided(np.array([2.0]), np.array([1.0]), 3.0), [4.0])
    npt.assert_allclose(guided(np.array([2.0]), np.array([1.0]), 1.0), [2.0])


def test_explicit_zero_beta_start_is_kept():
    betas = make_betas("linear", 5, beta_start=0.0, beta_end=0.02)
    npt.assert_allclose(betas[[0, -1]], [0.0, 0.02])
