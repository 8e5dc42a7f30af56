"""Chapter 02's exercise checkers (see `course.exercises.runner` for how a checker works)."""

from __future__ import annotations

from course.exercises.runner import Case, run_cases


def check_reparameterize(fn) -> bool:
    """Chapter 02: the learner's `reparameterize(mean, logvar, eps)` against `course.nn.vae.reparameterize`."""
    import torch

    from course.nn.vae import reparameterize

    g = torch.Generator().manual_seed(2)
    mean, logvar, eps = (torch.randn(2, 4, 3, 3, generator=g) for _ in range(3))
    cases = [
        Case(args=(mean, torch.zeros_like(mean), eps), label="logvar = 0: std = 1, so z = mean + eps"),
        Case(args=(mean, logvar, eps), label="a batch of 2 latents (B, C, h, w) = (2, 4, 3, 3)"),
        Case(args=(mean, torch.full_like(mean, -4.0), torch.ones_like(mean)), label="logvar = -4: std = exp(-2)"),
        Case(args=(torch.zeros(1, 4, 2, 2), 2.0 * logvar[:1, :, :2, :2], eps[:1, :, :2, :2]), label="mean = 0"),
    ]
    return run_cases(fn, reparameterize, cases, name="reparameterize", hint=(
        "z = mean + std * eps with std = exp(logvar / 2): logvar is the log of the VARIANCE, so "
        "exp(logvar) is the variance, not the standard deviation; use the eps you are given "
        "(do not draw a new one)"
    ))


def check_kl(fn) -> bool:
    """Chapter 02: the learner's `gaussian_kl(mean, logvar)` against `course.nn.vae.gaussian_kl`."""
    import torch

    from course.nn.vae import gaussian_kl

    g = torch.Generator().manual_seed(3)
    mean, logvar = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    cases = [
        Case(args=(torch.zeros(2, 4, 2, 2), torch.zeros(2, 4, 2, 2)), label="q = N(0, I): the KL is 0"),
        Case(args=(mean, torch.zeros_like(mean)), label="unit variance: KL = sum(mean^2) / 2"),
        Case(args=(mean, logvar), label="a batch of 3 posteriors (B, C, h, w) = (3, 4, 2, 2)"),
        Case(args=(torch.zeros(1, 4, 8, 8), torch.full((1, 4, 8, 8), -6.0)), label="a narrow posterior at 0"),
    ]
    return run_cases(fn, gaussian_kl, cases, name="gaussian_kl", hint={
        "shape": "return one KL per sample, shape (B,): sum over every dimension but the batch",
        "values": "KL(N(mean, var) || N(0, 1)) = 0.5 * (mean^2 + var - 1 - logvar) per value, summed "
                  "(not averaged) over the latent's values; var = exp(logvar)",
    })
