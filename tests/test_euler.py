"""course.diffusion.euler: Euler on the probability-flow ODE, against diffusers' EulerDiscreteScheduler."""

import dataclasses

import pytest
import torch

from course.diffusion import ddpm, euler, scheduler_parity

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)


@pytest.mark.parametrize("config", [
    dict(SD, timestep_spacing="leading"),  # SD's and SDXL's setting
    dict(SD, timestep_spacing="linspace"),  # diffusers' default: fractional timesteps
    dict(SD, timestep_spacing="trailing", prediction_type="v_prediction"),
    dict(beta_schedule="linear", timestep_spacing="trailing"),
])
def test_parity_with_diffusers(config):
    assert scheduler_parity.parity_euler_scheduler(config) <= 1e-5


def test_sigmas_and_start():
    schedule = ddpm.SCHEDULES["sd_scaled_linear"]
    timesteps, sigmas = euler.euler_timesteps(schedule, 10)
    assert timesteps.tolist()[:2] == [901.0, 801.0] and sigmas[-1] == 0 and bool((sigmas[:-1] > sigmas[1:]).all())
    sigma_max = float(sigmas[0])  # 8.4 for SD at t = 901 (alpha_bar 0.014): xt is almost all noise
    assert 8 < sigma_max < 9
    assert euler.init_noise_sigma(schedule, sigmas) == pytest.approx((sigma_max**2 + 1) ** 0.5)
    trailing = dataclasses.replace(schedule, timestep_spacing="trailing")
    assert euler.init_noise_sigma(trailing, euler.euler_timesteps(trailing, 10)[1]) == pytest.approx(float(euler.sigmas_of(trailing)[-1]))


def test_a_perfect_denoiser_lands_on_its_data():
    """With the true x0 the ODE's velocity is exactly the noise direction: Euler is exact on a point mass."""
    x0 = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    for prediction in ("epsilon", "v_prediction"):
        schedule = dataclasses.replace(ddpm.SCHEDULES["sd_scaled_linear"], prediction_type=prediction)
        timesteps, sigmas = euler.euler_timesteps(schedule, 7)
        noise = torch.randn_like(x0)

        def oracle(xt, t):  # the output a network that knows x0 would give at (xt, t)
            ab = 1 / (1 + float(torch.from_numpy(__import__("numpy").interp([t], range(1000), euler.sigmas_of(schedule).numpy()))) ** 2)
            eps = (xt - ab**0.5 * x0) / (1 - ab) ** 0.5
            return eps if prediction == "epsilon" else ab**0.5 * eps - (1 - ab) ** 0.5 * x0

        out = euler.euler_sample(oracle, x0 + float(sigmas[0]) * noise, schedule, timesteps, sigmas)
        torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="steps must be in 1 ... 1000"):
        euler.euler_timesteps(ddpm.SCHEDULES["sd_scaled_linear"], 0)
    with pytest.raises(ValueError, match="unknown prediction_type"):
        euler.predict_x0(torch.zeros(1), torch.zeros(1), 1.0, "flow")
    with pytest.raises(ValueError, match="one more sigma"):
        euler.euler_sample(lambda x, t: x, torch.zeros(1), ddpm.SCHEDULES["sd_scaled_linear"], torch.ones(3), torch.ones(3))
