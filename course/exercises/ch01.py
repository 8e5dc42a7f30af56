"""Chapter 01's exercise checkers (see `course.exercises.runner` for how a checker works)."""

from __future__ import annotations

from course.exercises.runner import Case, run_cases


def check_q_sample(fn) -> bool:
    """Chapter 01: the learner's `q_sample(x0, t, eps, alpha_bar)` against `course.diffusion.ddpm.q_sample`."""
    import torch

    from course.diffusion.ddpm import SCHEDULES, q_sample

    g = torch.Generator().manual_seed(0)
    linear, cosine = SCHEDULES["ddpm_linear"].alpha_bar, SCHEDULES["cosine"].alpha_bar
    images = torch.randn(4, 1, 32, 32, generator=g)
    points = torch.randn(6, 2, generator=g)
    cases = [
        Case(args=(images, 0, torch.randn(4, 1, 32, 32, generator=g), linear), label="t = 0 keeps almost all of x0"),
        Case(args=(images, torch.tensor([0, 10, 500, 999]), torch.randn(4, 1, 32, 32, generator=g), linear),
             label="a batch of images, one t per image"),
        Case(args=(points, torch.tensor([1, 100, 300, 600, 900, 999]), torch.randn(6, 2, generator=g), cosine),
             label="2-D points, cosine schedule"),
        Case(args=(images, 250, torch.randn(4, 1, 32, 32, generator=g), cosine), label="one int t for the batch"),
    ]
    return run_cases(fn, q_sample, cases, name="q_sample", hint={
        "values": "xt = sqrt(alpha_bar[t]) * x0 + sqrt(1 - alpha_bar[t]) * eps: both coefficients are square "
                  "roots, and alpha_bar is indexed at t (not t - 1, not the betas)",
        "shape": "index alpha_bar[t] and reshape it to (B, 1, 1, 1) (one value per sample) so that it "
                 "broadcasts over the other dimensions of x0",
        "error": "t is either one int or a (B,) tensor: alpha_bar[t] then has shape () or (B,); reshape "
                 "the (B,) case to (B, 1, ..., 1) before multiplying",
    })


def _ddim_step_reference(eps, t, xt, alpha_bar, prev_t, eta=0.0, noise=None):
    """`course.diffusion.ddpm.ddim_step` for an eps-prediction model, no clipping, alpha_bar past the end = 1."""
    from course.diffusion.ddpm import Schedule, ddim_step

    schedule = Schedule(num_train_timesteps=len(alpha_bar), clip_sample=False)
    schedule.__dict__["alpha_bar"] = alpha_bar  # the cached property, set to the learner's alpha_bar
    return ddim_step(eps, t, xt, schedule, prev_t, eta, noise).x_prev


def check_ddim_step(fn) -> bool:
    """Chapter 01: the learner's `ddim_step(eps, t, xt, alpha_bar, prev_t, eta=0.0, noise=None)` -> x_prev."""
    import torch

    from course.diffusion.ddpm import SCHEDULES

    g = torch.Generator().manual_seed(1)
    cosine, linear = SCHEDULES["cosine"].alpha_bar, SCHEDULES["ddpm_linear"].alpha_bar

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    cases = [
        Case(args=(randn(3, 1, 8, 8), 999, randn(3, 1, 8, 8), linear, 899), label="eta = 0, t = 999 -> 899"),
        Case(args=(randn(3, 1, 8, 8), 500, randn(3, 1, 8, 8), cosine, 450), label="eta = 0, cosine schedule"),
        Case(args=(randn(3, 1, 8, 8), 40, randn(3, 1, 8, 8), cosine, -1),
             label="the last step: prev_t = -1 means alpha_bar_prev = 1 (clean data)"),
        Case(args=(randn(5, 2), 700, randn(5, 2), linear, 600), kwargs={"eta": 0.5, "noise": randn(5, 2)},
             label="eta = 0.5 adds sigma * noise"),
        Case(args=(randn(5, 2), 300, randn(5, 2), cosine, 200), kwargs={"eta": 1.0, "noise": randn(5, 2)},
             label="eta = 1: DDPM's posterior noise"),
    ]
    return run_cases(fn, _ddim_step_reference, cases, name="ddim_step", atol=1e-5, hint={
        "values": "x0_hat = (xt - sqrt(1 - ab_t) eps) / sqrt(ab_t); sigma = eta * sqrt((1 - ab_prev) / (1 - ab_t)) "
                  "* sqrt(1 - ab_t / ab_prev); x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps "
                  "+ sigma * noise. At prev_t = -1 use ab_prev = 1: alpha_bar[-1] is the noisiest value, not 1",
        "shape": "x_prev has the shape of xt",
    })
