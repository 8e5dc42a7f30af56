"""The math of diffusion, as pure functions on tensors.

Holds: noise schedules, the forward process, DDPM and DDIM steps, respacing and the conversions
between eps, x0 and v (`ddpm`); Euler on the probability-flow ODE (`euler`); the schedulers'
parity with diffusers (`scheduler_parity`); later the flow paths and the timestep samplers.

May import: torch (and numpy) only; no `nn.Module` with parameters, nothing else of `course`.
"""
