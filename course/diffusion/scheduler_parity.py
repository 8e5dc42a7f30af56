"""The course's schedulers against diffusers' (DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler).

Each `parity_*` function builds the diffusers scheduler from a config, runs the same sampling
loop with the course's pure functions and diffusers' `step`, on the same random model outputs,
and returns the largest absolute difference (`course.parity.compare` calls them by name).

Shapes: B batch, C channels, H, W.
"""

from __future__ import annotations

import torch

from course.diffusion import ddpm
from course.diffusion.ddpm import ddim_step, ddpm_step, q_sample, respace, schedule_from_diffusers
from course.diffusion.euler import euler_sample, euler_timesteps, init_noise_sigma

# --- parity with diffusers ---------------------------------------------------------------------

PARITY_DEFAULT_CONFIG = {"num_train_timesteps": 100}  # small default for `course.parity.compare`
PARITY_STEPS = 10  # sampling steps compared (or T, if smaller)
PARITY_SHAPE = (2, 3, 8, 8)  # (B, C, H, W) of the random inputs


def _parity(scheduler_cls, config: dict | None, seed: int, method: str, eta: float) -> float:
    """max |course - reference| over alpha_bar, add_noise, the timesteps and every step's outputs."""
    ref = scheduler_cls(**(PARITY_DEFAULT_CONFIG if config is None else config))
    schedule = schedule_from_diffusers(ref.config)
    T = schedule.num_train_timesteps
    g = torch.Generator().manual_seed(seed)
    diffs = [(ref.alphas_cumprod - schedule.alpha_bar).abs().max()]

    x0 = 1.5 * torch.randn(PARITY_SHAPE, generator=g)  # beyond [-1, 1] so that clipping acts
    eps = torch.randn(PARITY_SHAPE, generator=g)
    t = torch.randint(0, T, (PARITY_SHAPE[0],), generator=g)
    diffs.append((ref.add_noise(x0, eps, t) - q_sample(x0, t, eps, schedule.alpha_bar)).abs().max())

    steps = min(PARITY_STEPS, T)
    ref.set_timesteps(steps)
    timesteps = respace(T, steps, schedule.timestep_spacing, schedule.steps_offset)
    if not torch.equal(ref.timesteps, timesteps):
        return float("inf")
    xt = torch.randn(PARITY_SHAPE, generator=g)
    learned = schedule.variance_type == "learned_range"  # the model outputs eps and v: 2C channels
    out_shape = (PARITY_SHAPE[0], 2 * PARITY_SHAPE[1], *PARITY_SHAPE[2:]) if learned else PARITY_SHAPE
    for i, t in enumerate(timesteps.tolist()):
        model_output = torch.randn(out_shape, generator=g)
        if learned:
            model_output[:, PARITY_SHAPE[1]:] = torch.tanh(model_output[:, PARITY_SHAPE[1]:])  # v in (-1, 1)
        noise_seed = int(torch.randint(0, 2**31, (1,), generator=g))
        noise = torch.randn(PARITY_SHAPE, generator=torch.Generator().manual_seed(noise_seed))
        if method == "ddpm":  # diffusers draws the noise itself: give it a generator in the same state
            out = ref.step(model_output, t, xt, generator=torch.Generator().manual_seed(noise_seed))
            prev_t = int(timesteps[i + 1]) if i + 1 < len(timesteps) else -1
            mine = ddpm_step(model_output, t, xt, schedule, noise, prev_t)
        else:  # diffusers' DDIM steps back by T // steps whatever the spacing
            out = ref.step(model_output, t, xt, eta=eta, variance_noise=noise if eta > 0 else None)
            mine = ddim_step(model_output, t, xt, schedule, t - T // steps, eta, noise)
        diffs += [(out.prev_sample - mine.x_prev).abs().max(), (out.pred_original_sample - mine.x0).abs().max()]
        xt = out.prev_sample  # both sides continue from the reference's sample
    return float(max(diffs))


def parity_ddpm_scheduler(config: dict | None = None, seed: int = 0) -> float:
    """Largest |course - diffusers.DDPMScheduler| over alpha_bar, add_noise and a run of `step`s.

    Args:
        config: DDPMScheduler constructor kwargs; None takes PARITY_DEFAULT_CONFIG.
        seed: seeds the inputs, the random model outputs and the step noise (the same on both sides).

    Returns:
        The largest absolute difference (inf if the sampling timesteps differ). Each step starts
        both sides from the reference's sample, so differences do not compound.
    """
    from diffusers import DDPMScheduler

    return _parity(DDPMScheduler, config, seed, "ddpm", 0.0)


def parity_ddim_scheduler(config: dict | None = None, seed: int = 0, *, eta: float | None = None) -> float:
    """Largest |course - diffusers.DDIMScheduler| over alpha_bar, add_noise and a run of `step`s.

    Args:
        config: DDIMScheduler constructor kwargs; None takes PARITY_DEFAULT_CONFIG.
        seed: seeds the inputs, the random model outputs and the step noise (the same on both sides).
        eta: the DDIM eta; None checks both 0 and 0.5 and returns the larger difference.

    Returns:
        The largest absolute difference (inf if the sampling timesteps differ).
    """
    from diffusers import DDIMScheduler

    etas = (0.0, 0.5) if eta is None else (eta,)
    return max(_parity(DDIMScheduler, config, seed, "ddim", e) for e in etas)


def parity_euler_scheduler(config: dict | None = None, seed: int = 0, *, steps: int = 12) -> float:
    """Max |course - diffusers| of EulerDiscreteScheduler's timesteps, sigmas, start scale and a whole sampling run.

    The "model" is a fixed nonlinear function of (x, t), the same on both sides, so every step's
    output depends on the previous one.

    Args:
        config: EulerDiscreteScheduler arguments (default: SD's scaled-linear betas, "leading" + offset 1).
        seed: seeds the starting noise.
        steps: sampling steps.
    """
    from diffusers import EulerDiscreteScheduler

    config = dict(config or dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                                 timestep_spacing="leading"))
    ref = EulerDiscreteScheduler(**config)
    ref.set_timesteps(steps)
    schedule = ddpm.schedule_from_diffusers({"clip_sample": False, **config})
    timesteps, sigmas = euler_timesteps(schedule, steps)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed))  # (B, C, h, w)

    def model(xt: torch.Tensor, t) -> torch.Tensor:  # any smooth function of both inputs
        return torch.tanh(0.7 * xt) + 0.1 * torch.sin(torch.as_tensor(t, dtype=torch.float32) / 100.0)

    x_ref = noise * ref.init_noise_sigma
    for t in ref.timesteps:
        x_ref = ref.step(model(ref.scale_model_input(x_ref, t), t), t, x_ref).prev_sample
    x = euler_sample(model, noise * init_noise_sigma(schedule, sigmas), schedule, timesteps, sigmas)
    return max(float((timesteps - ref.timesteps).abs().max()), float((sigmas - ref.sigmas).abs().max()),
               abs(init_noise_sigma(schedule, sigmas) - float(ref.init_noise_sigma)), float((x - x_ref).abs().max()))


FLOW_PARITY_STEPS = (1, 4, 28)  # sampling-grid sizes compared


def parity_flow_scheduler(config: dict | None = None, seed: int = 0, *, image_seq_len: int = 1024) -> float:
    """Max |course - diffusers| for FlowMatchEulerDiscreteScheduler: grids, shifts, scale_noise and step.

    For each grid size in FLOW_PARITY_STEPS: `set_timesteps` (static `shift`, or the dynamic shift
    with mu from the pipeline's `calculate_shift` for `image_seq_len` tokens) against
    `flow.flow_sigmas`; `scale_noise` at every grid point against the OT path; and a whole Euler
    run with a fixed nonlinear "model" of (x, t) against `flow.sample`.

    Args:
        config: FlowMatchEulerDiscreteScheduler arguments (default: SD3's, shift 3.0).
        seed: seeds the sample and the noise.
        image_seq_len: the token count that sets mu when `use_dynamic_shifting` is on.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift as ref_shift

    from course.diffusion import flow

    config = dict(config or {"num_train_timesteps": 1000, "shift": 3.0})
    ref = FlowMatchEulerDiscreteScheduler(**config)
    T = ref.config.num_train_timesteps
    mu_args = dict(base_seq_len=ref.config.base_image_seq_len, max_seq_len=ref.config.max_image_seq_len,
                   base_shift=ref.config.base_shift, max_shift=ref.config.max_shift)
    mu = flow.calculate_shift(image_seq_len, **mu_args) if ref.config.use_dynamic_shifting else None
    diffs = [abs(flow.calculate_shift(image_seq_len, **mu_args) - ref_shift(image_seq_len, **mu_args))]
    g = torch.Generator().manual_seed(seed)
    x0, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)  # (B, C, h, w)

    def model(x: torch.Tensor, t) -> torch.Tensor:  # any smooth function of both inputs
        return torch.tanh(0.7 * x) + 0.1 * torch.sin(torch.as_tensor(t, dtype=torch.float32) / 100.0)

    for steps in FLOW_PARITY_STEPS:
        ref.set_timesteps(steps, mu=mu)
        sigmas = flow.flow_sigmas(steps, shift=ref.config.shift, mu=mu, num_train_timesteps=T)
        diffs += [float((sigmas - ref.sigmas).abs().max()), float((sigmas[:-1] * T - ref.timesteps).abs().max())]
        for t, sigma in zip(ref.timesteps, sigmas):
            noisy = ref.scale_noise(x0, t[None].expand(2), noise)
            diffs.append(float((noisy - flow.get_path("ot").point(x0, noise, sigma)).abs().max()))
        x_ref = noise.clone()
        for t in ref.timesteps:
            x_ref = ref.step(model(x_ref, t), t, x_ref).prev_sample
        x = flow.sample(lambda x, s: model(x, s[0] * T), noise, sigmas)
        diffs.append(float((x - x_ref).abs().max()))
    return max(diffs)
