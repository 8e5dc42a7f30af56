"""Chapter 07's exercise checkers (see `course.exercises.runner` for how a checker works)."""

from __future__ import annotations

from course.exercises.runner import Case, run_cases


def _cfm_reference(model, x0, eps, t):
    from course.diffusion import flow

    xt, u = flow.rf_path(x0, eps, t)
    return flow.cfm_loss(model(xt, t), u)


def check_cfm_loss(fn) -> bool:
    """Chapter 07: the learner's `cfm_loss(model, x0, eps, t)`, rectified flow's conditional flow matching loss.

    xt = (1 - t) x0 + t eps (t = 1 noise), the target u = eps - x0, the loss mean ||model(xt, t) - u||^2
    over every element (Lipman et al. 2022, Eq. 9; Liu et al. 2022, Eq. 1). t is (B,).
    """
    import torch

    g = torch.Generator().manual_seed(70)
    W = torch.randn(2, 2, generator=g)

    def model(xt, t):  # a fixed velocity field that depends on both inputs, so that every slip shows
        return torch.tanh(xt @ W) * (1 + t[:, None]) - xt

    def case(B, label):
        return Case(args=(model, torch.randn(B, 2, generator=g), torch.randn(B, 2, generator=g),
                          torch.rand(B, generator=g)), label=label)

    cases = [case(8, "8 points"), case(1, "one point"), case(64, "64 points")]
    return run_cases(fn, _cfm_reference, cases, name="cfm_loss", atol=1e-6, hint={
        "values": "t = 1 is noise here: xt = (1 - t) x0 + t eps (not t x0 + (1 - t) eps), and the target is the "
                  "velocity eps - x0 (the time derivative of xt), not eps. t is (B,): reshape it to (B, 1) to "
                  "broadcast over the coordinates. Average the squared error over every element",
        "shape": "the loss is one number: take the mean",
    })


def check_euler_step(fn) -> bool:
    """Chapter 07: the learner's `euler_step(x, v, sigma, sigma_next)` against `course.diffusion.flow.euler_step`."""
    import torch

    from course.diffusion.flow import euler_step

    g = torch.Generator().manual_seed(71)
    cases = [
        Case(args=(torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g), 1.0, 0.75), label="one step of four"),
        Case(args=(torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g), 0.5, 0.0),
             label="the last step to sigma = 0, on latents"),
        Case(args=(torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g), 1.0, 0.0), label="a single step 1 -> 0"),
    ]
    return run_cases(fn, euler_step, cases, name="euler_step", hint={
        "values": "x_next = x + (sigma_next - sigma) * v. sigma falls, so the step is negative: moving along -v from "
                  "noise toward data. A sign flip here sends the sample away from the data",
    })


def check_straightness(fn) -> bool:
    """Chapter 07: the learner's `straightness(v_fn, x_T, steps)` against `course.diffusion.flow.straightness`.

    Run Euler from x_T (sigma = 1) to sigma = 0 on the uniform grid of `steps` steps, keeping each
    step's velocity; with x1 = x_T and x0 the end point, return sum over steps of
    dt * mean over the batch of ||(x1 - x0) - v||^2 (summed over the data dims).
    """
    import torch

    from course.diffusion.flow import straightness

    g = torch.Generator().manual_seed(72)
    centre = torch.tensor([[1.0, -2.0]])
    rotation = lambda x, s: torch.stack([-x[:, 1], x[:, 0]], 1)  # noqa: E731: curved paths
    to_point = lambda x, s: (x - centre) / s[:, None]  # noqa: E731: straight paths to one point
    mixed = lambda x, s: (x - centre) / s[:, None] + 0.3 * torch.sin(3 * s)[:, None] * x  # noqa: E731
    cases = [Case(args=(rotation, torch.randn(16, 2, generator=g), 20), label="a rotating field (curved paths)"),
             Case(args=(to_point, torch.randn(16, 2, generator=g), 10), label="straight paths to one point: S = 0"),
             Case(args=(mixed, torch.randn(8, 2, generator=g), 32), label="a field that bends with sigma")]
    return run_cases(fn, straightness, cases, name="straightness", atol=1e-5, hint={
        "values": "the chord is x_T - x_end (noise minus the data it reached), the same for every step of a "
                  "trajectory; sum ||chord - v||^2 over the coordinates, average over the batch, weight by each "
                  "step's dt = sigma - sigma_next, and add up the steps. Use the velocity at the start of each step",
        "type": "return a Python float",
    })
