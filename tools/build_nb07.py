"""Write notebooks/07_flow_matching.ipynb (then run tools/store_outputs.py on it).

    python tools/build_nb07.py

The stored tables come from flow-shapes' manifest entry ("experiments"), written by
`python -m course.recipes.flow_ablations all`; the 2-D models train live.
"""

from pathlib import Path

import nbformat

NB = Path(__file__).resolve().parents[1] / "notebooks" / "07_flow_matching.ipynb"

SETUP = '''# NBVAL_IGNORE_OUTPUT
# Setup (the same first cell in every chapter): works locally, on Colab and under nbval.
import importlib.util, subprocess, sys
if "google.colab" in sys.modules and importlib.util.find_spec("course") is None:
    repo = "https://github.com/diffusion-from-scratch/course"  # the course's public repository
    subprocess.run(["git", "clone", "--depth", "1", repo, "/content/course"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/course"], check=True)
    sys.path.insert(0, "/content/course")

from course.runtime import setup
device = setup(seed=0)  # seeds Python, NumPy and torch; picks the device (these models are small: the CPU is fine)'''

IMPORTS = '''import matplotlib.pyplot as plt
import numpy as np
import torch

from course import checkpoints, parity
from course.diffusion import ddpm, flow
from course.recipes import dit_shapes, flow_shapes, flow_toys
from course.widgets import image_grid
from course.world.toys import toy_2d
from course.exercises.ch07 import check_cfm_loss, check_euler_step, check_straightness

torch.set_num_threads(1)  # small tensors: one thread is as fast and leaves the other core free'''


# The markdown that reads the measured numbers (written after the runs; "@@key" cells below).
TEXT = {
    "toy_live": """What the table says (the numbers above; the recorded run below has the same ones):

- **Both flows reach the floor** with enough steps: at 128 Euler steps SW2 is 0.043 (OT) and 0.044
  (VP) against a real-vs-real floor of 0.054 (4,096 points each; a model can land under the floor by
  sampling noise), and 94% / 91% of the samples sit on the moons.
- **Few steps fail differently on the two paths**, and SW2 alone ranks the failures oddly. One OT
  Euler step from pure noise lands every sample on E[x0 | x1], which is near the data's mean: a blob
  in the middle (SW2 1.35, none on the data). One VP step hardly moves the noise at all, because the
  VP path is nearly flat at t = 1 (da/dt and db/dt are tiny there): the samples stay a Gaussian
  cloud, which happens to be closer to the moons in SW2 (0.55). Neither is an image of moons; the
  share on the data says so, and from 4 steps on OT is ahead on it (0.75 against 0.39 at 4 steps,
  0.88 against 0.75 at 8).
- **OT is straighter** (S = 1.27 against 1.46), but neither is straight: the marginal field of a
  two-moon data set curves, because paths that cross in the conditional picture get averaged where
  they meet. The next section removes that.""",
    "toy_reflow": """One reflow makes the flow almost perfectly straight (S 1.27 → 0.0025) and turns **one** Euler
step from a blob (SW2 1.35, none on the data) into moons (SW2 0.059 against the floor's 0.054, 85% on
the data): the miniature of the paper's CIFAR-10 jump (1-step FID 378 → 12.2). It is not free:
2.56 million network evaluations to make the pairs (20,000 solves of 128 steps) plus a fine-tune, and
at many steps the reflowed flow is slightly *worse* than the original (SW2 0.047 and 92% on the data at
128 steps, against 0.043 and 94%): it learns the first flow's 128-step samples, errors included, and
adds its own fitting error. Reflow trades a little quality at many steps for a lot at one or two.""",
    "shapes_nfe": """**The few-step claim holds in miniature.** With the same network, data and training steps,
rectified flow with **4** Euler steps (FID 7.66, class accuracy 0.78) already matches DDIM with **50**
(7.05, 0.79), and with **8** steps (2.39, 0.93) it beats DDIM at 50 and even at 250 (5.89, 0.82); the
floor is 0.49. At equal steps the gap is widest where steps are few: at 8 steps DDIM reaches FID 16.0,
at 4 steps 75.3. (dit-shapes' own recommended sampler, DDPM with its learned variance at 50 steps,
scores 4.71 at w = 3: the flow at 8 steps still wins.) Neither family makes anything at 1 step: one
Euler step from pure noise lands on E[x0 | noise], close to the average latent, which decodes to an
almost empty background (class accuracy 0).

Two caveats the table teaches. First, the two models are one run each; at n = 512 differences of a
few tenths of FID (1.92 against 1.70 at 16 steps on the two grids) are within the noise. Second, **the
grid matters at few steps**: diffusers' `FlowMatchEulerDiscreteScheduler` spaces its N points from 1
to 1/1000 and then appends 0, so its last step only goes from σ = 0.001 to 0. With 2 steps that is
one real step: its 2-step FID (147.07) equals its 1-step FID (147.15), and at 4 steps it scores 22.4
where the uniform grid scores 7.66. The course samples its flow models on the uniform grid; SD3's
pipelines, with 28 steps, hardly feel the difference.""",
    "shapes_vp": """**OT beats VP at every step count**, as Lipman et al. found at scale: at 4 Euler steps FID 7.66
against 44.8, at 8 steps 2.39 against 6.82, and VP needs 16–32 steps (4.17, 3.75) to approach what OT
reaches at 4–8. Its trajectories are far from straight (S = 475 against 41, summed over the 256 latent
dimensions): the VP velocity is tiny near t = 1, where its path hardly changes, and huge near t = 0,
so a uniform Euler grid wastes its first steps and overshoots in its last. On the 2-D toys the same
VP model scored a *lower* SW2 than OT at 1–8 steps, because its near-noise samples are spread like the
data; FID, which sees what the samples look like, ranks it last here. One run each, at n = 512.""",
    "shapes_reflow": """**Reflow's jump, in miniature, on latents.** One Euler step goes from FID 147 (class accuracy 0)
to **34.1 (0.42)**, two steps from 95.9 (0.05) to **12.7 (0.72)**, and the trajectories straighten from
S = 41.4 to 3.66. The paper's CIFAR-10 jump is larger (1-step FID 378 → 12.2); it used 4 million pairs
and a long training, where this used 8,192 pairs (262,144 network passes, 13 minutes) and 1,000
fine-tuning steps (11 minutes). At 4 steps the reflowed model is a little better (6.61 against 7.66)
and needs no guidance pass, at 8 steps a little worse (2.69 and 0.90 against 2.39 and 0.93): as on the
toys, reflow trades a little quality at many steps for a lot at one or two. Compare the two models
and DDIM in the explorer above; `flow-shapes-reflow` defaults to 2 steps.""",
    "summary": """## Summary, and the bridge to chapter 08

- A flow model learns a **velocity field** v(x, t) and samples by integrating dx/dt = v from noise
  (t = 1) to data (t = 0): a continuous normalizing flow. The **probability path** x_t = a_t·x0 + b_t·ε
  fixes what it learns; rectified flow's is the straight line, a_t = 1 − t, b_t = t, u = ε − x0.
- The **CFM loss** regresses v on the per-sample velocity; it has the intractable FM loss's gradient
  (measured: the difference falls as 1/√n), so it learns the marginal field.
- **Rectified flow is DDPM with a different path and target**: the same points up to a rescaling
  at the same SNR, and ε, x0, chapter 01's v and the velocity convert into each other exactly.
- **Straighter is cheaper**: OT paths are straighter than VP paths, and one **reflow** straightens a
  flow almost completely (2-D straightness 1.27 → 0.0025), so one Euler step suffices — at the price
  of generating pairs and fine-tuning, and of a little quality at many steps.
- On Shapes latents, with the same network, data and steps as chapter 06's DiT, rectified flow at
  4–8 Euler steps matches or beats DDIM at 50–250: the few-step claim behind SD3.

Chapter 08 keeps rectified flow and asks **which t to train on**: uniform t spends as much effort on
the easy ends of the path as on its hard middle. SD3's logit-normal sampler, and the shift that makes
the same model work at higher resolution, are its subject.""",
}


CELLS: list[tuple[str, str]] = [
    ("md", '''# Chapter 07 — Flow matching and rectified flow

Chapter 06 built the transformer of SD3. This chapter builds its **objective**. DDPM learns to undo a
noising process one small step at a time; **flow matching** (Lipman et al. 2022) and **rectified
flow** (Liu et al. 2022) learn a *velocity field* and generate by integrating an ordinary differential
equation from noise to data. With the straight path that rectified flow uses, the ODE's trajectories
are nearly straight lines, and a few Euler steps follow them well: that is why SD3 trains with it.

What you build and measure:
1. ODEs that move distributions (continuous normalizing flows), and probability paths.
2. The conditional flow matching (CFM) loss, written by you, and a check that its gradient equals
   the intractable flow matching loss's.
3. The SD3 view: rectified flow is DDPM with a different path and a different target.
4. The Euler step and the straightness of a flow, written by you.
5. Flows on 2-D toys: vector fields, trajectories, quality against steps, and **reflow**.
6. The same on Shapes latents: `flow-shapes` (chapter 06's DiT trained with rectified flow) against
   `dit-shapes` with DDIM, the OT path against the VP path, and `flow-shapes-reflow`.

**Time convention.** In this course (and in SD3 and diffusers' `FlowMatchEulerDiscreteScheduler`),
**t = 1 is pure noise and t = 0 is data**; sampling runs t from 1 down to 0. Lipman et al. and the
`facebookresearch/flow_matching` library use the reverse (t = 0 noise, t = 1 data): their x_t is our
x_{1−t}, and their velocity is minus ours. Keep that in mind when you read their equations.'''),
    ("code", SETUP),
    ("code", IMPORTS),
    ("md", '''## 1. ODEs move distributions

An ODE dx/dt = v(x, t) moves every point; started from many samples of a distribution p₁, it moves
the whole distribution. The density follows the **instantaneous change of variables** (Chen et al.
2018): d log p_t(x_t)/dt = −∇·v(x_t, t) along a trajectory. A model that learns such a v is a
**continuous normalizing flow** (CNF). Integrating from t = 1 (noise) to t = 0 turns noise into data.

Which field? For one Gaussian of data, N(μ, s²I), the straight path x_t = (1 − t)·x0 + t·ε has a known
marginal at every t, N((1 − t)μ, ((1 − t)²s² + t²)I), and a known field that carries it (section 3
derives it). Below, samples of N(0, I) ride that field with Euler steps from t = 1 to 0, and their
mean and std are compared with the closed form at each t.'''),
    ("code", '''mu, s = torch.tensor([[2.0, -1.0]], dtype=torch.float64), 0.3
ot = flow.get_path("ot")
field = lambda x, t: flow.gmm_marginal_velocity(x, t[0], mu, s, torch.ones(1, dtype=torch.float64), ot)
x = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
sigmas = flow.uniform_sigmas(200).double()
print(f"{'t':>5} {'mean (ODE)':>18} {'mean (closed form)':>20} {'std (ODE)':>10} {'std (closed form)':>18}")
for i, (a, b) in enumerate(zip(sigmas[:-1], sigmas[1:])):
    if i % 50 == 0:
        t = float(a)
        print(f"{t:5.2f} {str([round(v, 3) for v in x.mean(0).tolist()]):>18} "
              f"{str([round(v, 3) for v in ((1 - t) * mu[0]).tolist()]):>20} {x.std(0).mean():10.3f} "
              f"{((1 - t) ** 2 * s ** 2 + t ** 2) ** 0.5:18.3f}")
    x = flow.euler_step(x, field(x, a.expand(len(x))), a, b)
print(f" 0.00 {str([round(v, 3) for v in x.mean(0).tolist()]):>18} {str(mu[0].tolist()):>20} {x.std(0).mean():10.3f} {s:18.3f}")'''),
    ("md", '''The samples' statistics follow the closed form within sampling noise (20,000 points): the field moves
the noise distribution onto the data distribution, keeping the marginal of the path at every t.
Flow matching is the art of *learning* that field when the data is not one Gaussian.

## 2. Probability paths

A flow-matching model is defined by a **probability path**: how a data point x0 and a noise sample ε
mix at time t. The course's three are affine, x_t = a_t·x0 + b_t·ε, and each has its **conditional
velocity** u_t = da_t/dt·x0 + db_t/dt·ε, the speed of x_t along that one path (`course.diffusion.flow`):

| path | a_t | b_t | u_t |
|---|---|---|---|
| rectified flow / conditional OT (`"ot"`) | 1 − t | t | ε − x0 |
| VP diffusion as a flow (`"vp"`, Lipman et al.'s FM-VP) | e^{−T(t)/2}, T(t) = ∫₀ᵗ β(s) ds | √(1 − a_t²) | a′·x0 + b′·ε |
| cosine (`"cosine"`) | cos(πt/2) | sin(πt/2) | (π/2)(cos(πt/2)·ε − sin(πt/2)·x0) |

β(s) = 0.1 + 19.9·s is the VP SDE's (Song et al. 2021); DDPM's discrete linear schedule is its
discretisation. The OT path is the straight line between x0 and ε, travelled at constant speed.'''),
    ("code", '''t = torch.linspace(0.001, 0.999, 400)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained")
for name, colour in zip(flow.PATHS, ("tab:blue", "tab:red", "tab:green")):
    p = flow.get_path(name)
    axes[0].plot(t, p.a(t), color=colour, label=f"{name}: a_t (signal)")
    axes[0].plot(t, p.b(t), color=colour, ls="--", label=f"{name}: b_t (noise)")
    axes[1].plot(t, torch.log(p.a(t) ** 2 / p.b(t) ** 2), color=colour, label=name)
    axes[2].plot(t, (p.da(t) ** 2 + p.db(t) ** 2), color=colour, label=name)
axes[0].set(xlabel="t (1 = noise)", title="coefficients of x_t = a_t x0 + b_t eps")
axes[1].set(xlabel="t", ylabel="log SNR = log(a^2 / b^2)", title="signal-to-noise ratio")
axes[2].set(xlabel="t", ylabel="a'^2 + b'^2", yscale="log", title="size of the target u_t (per unit x0, eps)")
axes[0].legend(fontsize=7)
axes[1].legend(fontsize=8)
_ = axes[2].legend(fontsize=8)'''),
    ("md", '''Two things to read off. The VP path spends most of its time near pure noise (its log-SNR falls fast
and flattens), while OT's log-SNR is symmetric around t = 0.5. And the VP target's size **blows up
as t → 0**: db/dt ~ 1/√t there, so E‖u_t‖² grows without bound near the data end — a model trained on
uniform t sees rare, huge targets. OT's target has the same size at every t.

## 3. The conditional flow matching loss

The field we want is the **marginal** velocity u_t(x) = E[u_t(x_t | x0, ε) | x_t = x], the average of
the conditional velocities of all the paths that pass through x at time t (Lipman et al. 2022, Eq. 8).
Regressing on it, the flow matching (FM) loss E‖v_θ(x_t, t) − u_t(x_t)‖², is intractable: u_t(x) needs
an integral over the data. The **conditional** flow matching (CFM) loss regresses on the per-sample
target instead:

  L_CFM(θ) = E_{t, x0, ε} ‖v_θ(x_t, t) − u_t(x_t | x0, ε)‖²  (Lipman et al. 2022, Eq. 9)

and has the **same gradient** (their Theorem 2): the two losses differ by a constant, the variance of
the conditional target around its mean. For rectified flow, x_t = (1 − t)·x0 + t·ε and u = ε − x0.

**Exercise 7.1.** Write the CFM loss on the rectified-flow path: `cfm_loss(model, x0, eps, t)` with
x0, ε of shape (B, 2), t of shape (B,), and `model(xt, t)` returning (B, 2). Return the mean squared
error over every element.'''),
    ("code", '''def cfm_loss(model, x0, eps, t):
    ### BEGIN SOLUTION
    te = t[:, None]                       # (B, 1): broadcast over the coordinates
    xt = (1 - te) * x0 + te * eps         # the point on the straight path (t = 1 noise)
    u = eps - x0                          # its velocity
    return ((model(xt, t) - u) ** 2).mean()
    ### END SOLUTION

check_cfm_loss(cfm_loss)'''),
    ("md", '''Now the theorem, in code. On a Gaussian mixture (four components on a circle) the marginal field is
closed-form (`flow.gmm_marginal_velocity`: the posterior over components, then each component's
Gaussian conditional), so both losses can be computed from the same samples (x0, ε, t). Their
gradients with respect to a small network's parameters differ only by Monte Carlo noise, which
shrinks as 1/√n; the losses themselves differ by a constant.'''),
    ("code", '''torch.manual_seed(0)
probe = flow_toys.ToyVelocity(hidden=32)
ns = (5_000, 20_000, 80_000, 320_000)
runs = [flow_toys.cfm_fm_gradients(probe, n=n, seed=1) for n in ns]
for n, r in zip(ns, runs):
    print(f"n = {n:>7,}: L_CFM {r['cfm_loss']:.3f}  L_FM {r['fm_loss']:.3f}  (difference {r['cfm_loss'] - r['fm_loss']:.3f})  "
          f"|grad_CFM - grad_FM| / |grad_FM| = {r['relative_diff']:.3f}")
fig, ax = plt.subplots(figsize=(4.5, 3), layout="constrained")
ax.loglog(ns, [r["relative_diff"] for r in runs], "o-", label="measured")
ax.loglog(ns, [runs[0]["relative_diff"] * (ns[0] / n) ** 0.5 for n in ns], "k--", label="1 / sqrt(n)")
ax.set(xlabel="samples n", ylabel="relative gradient difference", title="CFM and FM: the same gradient")
_ = ax.legend(fontsize=8)'''),
    ("md", '''The relative difference falls roughly as 1/√n (one draw per n, so the points scatter around the
dashed line), the signature of pure sampling noise around equal expectations; the loss gap stays put (the conditional target's variance, which no model can remove).
So a model trained with the cheap CFM loss learns the marginal field.

## 4. The SD3 view: DDPM with a different path and target

Rectified flow is not a new kind of model. A DDPM point x_t = √ᾱ·x0 + √(1 − ᾱ)·ε, divided by
√ᾱ + √(1 − ᾱ), **is** a rectified-flow point with σ = √(1 − ᾱ) / (√ᾱ + √(1 − ᾱ)), at the same
signal-to-noise ratio, ((1 − σ)/σ)² = ᾱ/(1 − ᾱ). Any of the predictions converts to any other:
ε = x_t + (1 − σ)·v, x0 = x_t − σ·v, and chapter 01's v-prediction, √ᾱ·ε − √(1 − ᾱ)·x0, is the
velocity of the *cosine* path (up to π/2). What differs is the path the training samples lie on and
the target the network regresses, hence which errors the loss weighs (chapter 08). Checked on chapter
01's cosine schedule:'''),
    ("code", '''schedule = ddpm.Schedule(beta_schedule="squaredcos_cap_v2")
g = torch.Generator().manual_seed(0)
x0, eps = torch.randn(4, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(4, 4, 8, 8, generator=g, dtype=torch.float64)
t = torch.tensor([50, 400, 800, 990])
ab = schedule.alpha_bar.double()[t]
xt_vp = ddpm.q_sample(x0, t, eps, schedule.alpha_bar.double())   # DDPM's point
xt, sigma = flow.flow_point_from_vp(xt_vp, ab)                   # rescaled: a rectified-flow point
u = eps - x0                                                     # the velocity there
checks = {
    "rescaled DDPM point == OT point at sigma": (xt - ot.point(x0, eps, sigma)).abs().max(),
    "same SNR": (((1 - sigma) / sigma) ** 2 - ab / (1 - ab)).abs().max() / (ab / (1 - ab)).max(),
    "eps from the velocity": (flow.velocity_to_eps(xt, u, sigma) - eps).abs().max(),
    "x0 from the velocity": (flow.velocity_to_x0(xt, u, sigma) - x0).abs().max(),
    "chapter 01's v from the velocity": (flow.v_ddpm_from_velocity(xt_vp, u, ab) - ddpm.v_target(x0, eps, ab.reshape(-1, 1, 1, 1))).abs().max(),
}
for name, diff in checks.items():
    print(f"{name:<36} max diff {float(diff):.1e}")
print("DDPM t -> flow sigma:", {int(k): round(float(s), 3) for k, s in zip(t, sigma)})'''),
    ("md", '''All equal to float64 precision. The ODE solvers are where the two families now part: a flow model
is sampled by integrating dx/dσ = v from σ = 1 to 0.

## 5. Solvers: the Euler step

Rectified flow samples with Euler's method (Liu et al. 2022, Eq. 2): x_{σ_next} = x_σ + (σ_next − σ)·v(x_σ, σ).
σ decreases, so each step moves *against* the velocity, from noise toward data. Heun's method
(`flow.heun_step`) averages the slopes at both ends of the step: second order, two evaluations.
SD3's sampler is diffusers' `FlowMatchEulerDiscreteScheduler`: its σ grid, its shift (chapter 08) and
its step equal `course.diffusion.flow` exactly:

**Exercise 7.2.** Write `euler_step(x, v, sigma, sigma_next)`.'''),
    ("code", '''def euler_step(x, v, sigma, sigma_next):
    ### BEGIN SOLUTION
    return x + (sigma_next - sigma) * v
    ### END SOLUTION

check_euler_step(euler_step)'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
for config in (None, {"shift": 1.0}, {"use_dynamic_shifting": True}):
    print(f"flow_scheduler parity {config}: max |course - diffusers| = {parity.compare('flow_scheduler', config):.1e}")'''),
    ("md", '''## 6. Flows on 2-D toys

A small MLP velocity field, `flow_toys.ToyVelocity` (37 k parameters), trained with the CFM loss on the
two moons, once on the OT path and once on the VP path (2,500 steps of 512 points each). The loss of
a flow never reaches zero (the conditional target's variance): watch it settle.'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
moons = toy_2d("moons", 20_000)
toy = {path: flow_toys.train_toy_flow(moons, path) for path in ("ot", "vp")}
fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
for path, run in toy.items():
    smooth = np.convolve(run.losses, np.ones(50) / 50, mode="valid")
    ax.plot(smooth, label=f"{path} path ({run.seconds:.0f} s)")
ax.set(xlabel="step", ylabel="CFM loss (50-step mean)", yscale="log", title="two moons: the CFM loss while training")
_ = ax.legend(fontsize=8)'''),
    ("md", '''The VP loss is larger and noisier: its targets near t = 0 are huge (section 2). The learned fields,
−v (the direction a sample moves as t falls) with the samples riding them, at five times:'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
flow_toys.field_figure(toy["ot"].model, title="OT path: -v(x, t) and the samples at each t")'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
flow_toys.field_figure(toy["vp"].model, title="VP path: -v(x, t) and the samples at each t")'''),
    ("md", '''The marginal densities p_t along the OT flow, as histograms of its own samples: a continuous
normalizing flow morphing the Gaussian into the moons.'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
flow_toys.density_figure(toy["ot"].model, title="p_t along the OT flow (t = 1 noise -> t = 0 data)")'''),
    ("md", '''Explore the field at any t, for either path (the static figure shows three times; move the slider
in JupyterLab or Colab):'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
flow_toys.field_explorer({"OT path": toy["ot"].model, "VP path": toy["vp"].model})'''),
    ("md", '''## 7. Straightness, and quality against steps

How straight are the trajectories? Liu et al. 2022 (Eq. 3) define the **straightness**
S = ∫₀¹ E‖(x1 − x0) − v(x_t, t)‖² dt along the flow's own trajectories, x1 the noise and x0 where it
lands. S = 0 exactly when every trajectory is a straight line at constant speed, which one Euler
step integrates exactly.

**Exercise 7.3.** Write `straightness(v_fn, x_T, steps)`: run Euler on the uniform grid
`flow.uniform_sigmas(steps)` from x_T, keep each step's velocity, and return the sum over steps of
dt·mean_batch ‖chord − v‖² (summed over the coordinates), with chord = x_T − x_end.'''),
    ("code", '''def straightness(v_fn, x_T, steps):
    ### BEGIN SOLUTION
    sigmas = flow.uniform_sigmas(steps).tolist()
    x, velocities = x_T, []
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        v = v_fn(x, torch.full((len(x),), sigma))
        velocities.append((v, sigma - sigma_next))
        x = x + (sigma_next - sigma) * v
    chord = x_T - x                                  # x1 - x0, the straight line each trajectory could have taken
    dims = tuple(range(1, x.dim()))
    return float(sum(dt * ((chord - v) ** 2).sum(dims).mean() for v, dt in velocities))
    ### END SOLUTION

check_straightness(straightness)'''),
    ("md", '''Now quality against the number of Euler steps. The distance: the **sliced Wasserstein distance**
SW2 between 4,096 samples and 4,096 fresh data points (the root mean square over 512 random
directions of the 1-D Wasserstein-2 distance of the projections, exact by sorting). Its **floor** is
SW2 between two independent real samples of the same size: what a perfect model scores.'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
tables = {path: flow_toys.quality_table(run.model, "moons") for path, run in toy.items()}

def show_toy(rows):
    print(f"{'moons':<10}" + "".join(f"{'Euler ' + str(k):>13}" for k in flow_toys.EULER_STEPS) + f"{'floor':>13}{'S':>7}")
    for name, row in rows.items():
        print(f"{name:<10}" + "".join(f"{row[f'sw_{k}']:>7.3f} ({row[f'on_data_{k}']:.2f})" for k in flow_toys.EULER_STEPS)
              + f"{row['sw_floor']:>7.3f} ({row['on_data_real']:.2f}){row['straightness']:>7.3f}")
    print("cells: SW2 to the data (share of samples on the data); floor: two real samples; S: straightness")

show_toy(tables)'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
flow_toys.steps_figure({"OT": toy["ot"].model, "VP": toy["vp"].model}, points=moons)'''),
    ("md", "@@toy_live"),
    ("md", '''## 8. Reflow: straightening the flow

The trajectories of the marginal field curve because paths that cross in the conditional picture
(ε₁ → x0₁ and ε₂ → x0₂) get averaged where they meet. **Reflow** (Liu et al. 2022, Sec. 2.3) removes
the crossings: integrate many noises ε with the trained flow to get their samples x0 = Φ(ε), then
train a new flow on straight lines between these **coupled pairs** instead of independent draws.
The ODE's own trajectories cannot cross, so the new conditional paths do not either, and the
2-rectified flow comes out nearly straight. The paper's CIFAR-10 result: **1-step FID 378 → 12.2**
after one reflow. The miniature: 20,000 pairs from 128-step Euler solves, then 2,000 fine-tuning
steps from the OT flow.'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
reflowed, pair_nfe = flow_toys.reflow_toy(toy["ot"])
after = flow_toys.quality_table(reflowed.model, "moons")
print(f"reflow cost: {pair_nfe:,} network evaluations for the pairs + {len(reflowed.losses):,} training steps "
      f"({reflowed.seconds:.0f} s)")
show_toy({"1-RF (OT)": tables["ot"], "2-RF": after})'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
flow_toys.trajectory_figure({"1-rectified flow (OT)": toy["ot"].model, "after one reflow": reflowed.model,
                             "VP path": toy["vp"].model}, points=moons)'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
flow_toys.steps_explorer({"before reflow": toy["ot"].model, "after reflow": reflowed.model}, moons)'''),
    ("md", "@@toy_reflow"),
    ("md", '''The same experiments on both toy sets, from the recorded run (`python -m course.recipes.flow_ablations
toys`; the same code as above):'''),
    ("code", '''experiments = checkpoints.manifest_entry("flow-shapes")["experiments"]
for name, row in experiments["toys"].items():
    rows = [(name, row)] + ([(name + " reflowed", row["reflow"])] if "reflow" in row else [])
    for label, r in rows:
        print(f"{label:<24}" + "".join(f"{r[f'sw_{k}']:>7.3f} ({r[f'on_data_{k}']:.2f})" for k in flow_toys.EULER_STEPS)
              + f"  floor {r['sw_floor']:.3f} ({r['on_data_real']:.2f})  S {r['straightness']:.3f}")
print("columns: SW2 (share on the data) at", ", ".join(f"{k}" for k in flow_toys.EULER_STEPS), "Euler steps")'''),
    ("md", '''## 9. On Shapes latents: `flow-shapes` against `dit-shapes`

`flow-shapes` is chapter 06's network (DiT, D = 192, depth 6, p = 2, adaLN-Zero, 18 classes
"a {colour} {shape}"), data (16,384 cached one-object latents) and steps (3,000 at batch 128), trained
with **rectified flow** instead of DDPM: the OT path with uniform t, the velocity target ε − x0, the
DiT's timestep input 1000·t as SD3 feeds it. The same four seeds at 1, 2, 4 and 8 steps, rectified
flow with Euler against `dit-shapes` with DDIM (both with guidance w = 3):'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
fm = flow_shapes.load("flow-shapes")
dit_pipe = dit_shapes.load()
prompts = ["a red circle", "a blue square", "a yellow triangle", "a purple circle"]
rows, titles = [], []
for steps in (1, 2, 4, 8):
    rows.append(list(fm.generate(prompts, steps=steps, guidance=3.0, seed=0)) +
                list(dit_pipe.generate(prompts, steps=steps, guidance=3.0, seed=0, method="ddim")))
    titles += [f"RF Euler {steps}"] * 4 + [f"DDIM {steps}"] * 4
image_grid(rows, titles=titles)'''),
    ("md", '''The measured table (512 class-balanced images per cell; Shapes-FID against real one-object images,
with the real-vs-real floor at the same n; class accuracy = ShapesEval's full match on the class
prompt). Recorded by `python -m course.recipes.flow_ablations all`:'''),
    ("code", '''def show(title, rows):
    print(title)
    for steps, r in sorted(rows.items(), key=lambda kv: int(kv[0])):
        print(f"  {steps:>4} steps: FID {r['fid']:7.2f}   class accuracy {r['class_accuracy']:.2f}")

show("rectified flow (flow-shapes), Euler on a uniform grid, w = 3", experiments["rf_euler"])
show("the same, Euler on diffusers' FlowMatchEulerDiscreteScheduler grid", experiments["rf_euler_diffusers_grid"])
show("DDPM (dit-shapes), DDIM, w = 3", experiments["dit_ddim"])
print("FID floor (real vs real, n = 512):", experiments["fid_floor"])'''),
    ("md", "@@shapes_nfe"),
    ("md", '''### The OT path against the VP path

The same network, data, steps and seed trained on the VP path (not shipped; only tabulated, made by
`python -m course.recipes.flow_ablations vp`). Lipman et al. 2022 (ImageNet 64×64, Table 1): FM-OT
FID 14.45 at 138 NFE against FM-VP 16.88 at 187, with an adaptive solver.'''),
    ("code", '''show("VP path, Euler, w = 3", experiments["vp_euler"])
print("straightness on latents (256 trajectories, 64 Euler steps):", experiments["straightness"])'''),
    ("md", "@@shapes_vp"),
    ("md", '''### One reflow of `flow-shapes`

`flow-shapes-reflow`: 8,192 (noise, latent) pairs from `flow-shapes`' own 16-step guided sampler,
then 1,000 fine-tuning steps on the straight lines between them. The pairs were made with guidance,
so the reflowed model learns the *guided* flow and samples without CFG: one network pass per step
instead of two.'''),
    ("code", '''show("flow-shapes-reflow, Euler, no CFG", experiments["reflow_euler"])
print(checkpoints.manifest_entry("flow-shapes-reflow")["notes"])'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
rf2 = flow_shapes.load("flow-shapes-reflow")
flow_shapes.steps_explorer({"flow-shapes": fm, "flow-shapes-reflow": rf2}, dit_pipe)'''),
    ("md", "@@shapes_reflow"),
    ("md", '''## 10. Experiment: guidance against steps

Change one thing and measure it: class accuracy of 54 samples (3 per class) from `flow-shapes` at a
few Euler steps, with and without guidance. Try `my_steps` = 1, 2, 4 or 16 and `my_guidance` = 1.5
or 6: does guidance help more at few steps or at many?'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
from course.world import metrics
my_steps, my_guidance = 4, 3.0
labels = dit_shapes.balanced_labels(54)
class_prompts = [dit_shapes.class_prompt(i) for i in labels.tolist()]
for w in (1.0, my_guidance):
    images = fm.generate(class_prompts, steps=my_steps, guidance=w, seed=3)
    print(f"{my_steps} Euler steps, w = {w:<4}: class accuracy {metrics.shapes_eval(images, class_prompts).full_match:.2f}")'''),
    ("md", "@@summary"),
]


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in CELLS:
        if kind == "md" and source.startswith("@@"):
            source = TEXT[source[2:]]
        nb.cells.append(nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source))
    return nb


if __name__ == "__main__":
    nbformat.write(build(), NB)
    print(f"wrote {NB} ({len(CELLS)} cells)")
