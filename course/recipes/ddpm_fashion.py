"""Chapter 01's shipped model: DDPM on Fashion-MNIST in pixel space, its sampler and its FID.

The pieces come from the package: the math from `course.diffusion.ddpm` (schedule, q_sample, eps loss,
DDPM and DDIM steps), the denoiser from `course.nn.unet` (used as a black box until chapter 04),
the training loop from `course.train`, FID from `course.world.metrics` with the features of the
`fashion-classifier` (`course.world.classifiers`). This module only chooses sizes and wires them:

    recipe      UNET_CONFIG, SCHEDULE, train_config, train_ddpm_fashion   (`python -m course train ddpm-fashion`)
    sampling    generate_x0, DDPMFashionPipeline                         (`course.pipelines.base.load("ddpm-fashion")`)
    evaluation  fid_table, evaluate_ddpm_fashion                          (`python -m course eval ddpm-fashion`)
    widgets     forward_process_figure, steps_figure                      (the notebook's explorers)

The notebook's first model, the 2-D toy, is `course.recipes.toy_2d`.

Shapes: B batch, images (B, 1, 32, 32) in [-1, 1] inside the model, uint8 (B, 32, 32, C) outside.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course.diffusion import ddpm
from course.nn.unet import PLAIN_DOWN, PLAIN_MID, PLAIN_UP, UNet, UNetConfig
from course.world import fashion_mnist
from course.zoo import Trained

# ----------------------------------------------------------------------------- the recipe

# Four levels 32 -> 16 -> 8 -> 4 whose widths double as the resolution halves, so every level
# costs about the same FLOPs (a conv costs ~ H*W*C^2). 8 channels at full resolution is thin,
# but the full-resolution level is where the compute goes: the 16-wide `fashion-32` preset costs
# 44 GFLOP per batch-64 training step (~1.5 s here), this one 11 GFLOP (~0.55 s) and 3 ms per
# image per sampling step, which is what lets the evaluation afford 1000-step DDPM sampling.
# Self-attention in the 4x4 mid block (16 tokens) gives every pixel a global view for almost nothing.
UNET_CONFIG = UNetConfig(
    in_channels=1, out_channels=1, sample_size=32,
    block_out_channels=(8, 16, 32, 64),
    down_block_types=(PLAIN_DOWN,) * 4, mid_block_type=PLAIN_MID, up_block_types=(PLAIN_UP,) * 4,
    layers_per_block=1, num_heads=1, cross_attention_dim=None, norm_num_groups=8,
    mid_block_self_attention=True,
)

# The cosine schedule rather than DDPM's linear one: the linear schedule keeps less than 10% of
# the signal's amplitude (sqrt(alpha_bar) < 0.1) from t = 673 on, so at 32x32 the last third of
# the training timesteps see almost the same picture of noise, and few-step sampling suffers most
# (Nichol & Dhariwal 2021, Sec. 3.2 and Fig. 3-5); the cosine schedule crosses 0.1 at t = 935.
# "trailing" spacing makes every respaced chain start at t = T-1, the noise level the sampler
# really starts from (Lin et al. 2024); with "leading" spacing a 10-step chain would start at t = 900.
#
# v-prediction, not eps-prediction. The cosine schedule (capped at beta = 0.999) ends at SNR 2e-9:
# a near-zero terminal SNR, where an eps-model's x0 = (xt - sqrt(1 - ab) eps_hat) / sqrt(ab) divides
# its small eps error by sqrt(ab) = 5e-5. Measured on the first shipped model (eps, 1800 steps):
# the x0 estimate's MSE on test images was 0.27 for the mean image, 0.49 at t = 950, 4.8 at t = 980
# and 1.7e6 at t = 999 (1.48 after clipping, 99.9% of its pixels beyond +-1), so every DDIM chain
# began with saturated x0 estimates, and more steps meant more of them (DDIM-100 FID 110.7 against
# DDIM-10's 65.0). A v-model reads x0 = sqrt(ab) xt - sqrt(1 - ab) v_hat: at t = T-1 it predicts
# x0 itself, the best estimate being the data mean (Salimans & Ho 2022, Sec. 4; Lin et al. 2024,
# Sec. 3.2: zero terminal SNR needs v-prediction).
SCHEDULE = ddpm.Schedule(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing", prediction_type="v_prediction")

TRAIN_STEPS = 9000  # ~0.36 s/step on one thread of the 2-core machine: ~55 minutes
BATCH_SIZE = 64
SAMPLE_STEPS = 50  # the pipeline's default: DDIM-50 ...
SAMPLE_ETA = 1.0  # ... with eta = 1, the table's best DDIM (FID 4.89 at n = 512, against 7.76 at eta = 0; the manifest)


def train_config(steps: int | None = None):
    """The recipe's TrainConfig (AdamW 2e-3, 200 warm-up steps, cosine decay, EMA 0.999)."""
    from course.train import TrainConfig, recipe_steps

    steps = recipe_steps(steps, TRAIN_STEPS)
    return TrainConfig(steps=steps, batch_size=BATCH_SIZE, lr=2e-3, weight_decay=0.0,
                       warmup_steps=min(200, steps // 2), schedule="cosine", ema_decay=0.999,
                       checkpoint_every=200, log_every=50)


@lru_cache(maxsize=2)
def fashion_tensor(split: str = "train") -> torch.Tensor:
    """All images of a split as one (N, 1, 32, 32) float tensor in [-1, 1] (train: 245 MB), made once."""
    return fashion_mnist.to_tensor_32(fashion_mnist.load_fashion_mnist(split)[0])


def fashion_batch(step: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """A random batch of Fashion-MNIST training images, (B, 1, 32, 32) in [-1, 1]."""
    images = fashion_tensor("train")
    return images[torch.randint(0, len(images), (batch_size,), generator=generator)]  # (B, 1, 32, 32)


def make_loss(schedule: ddpm.Schedule = SCHEDULE, prediction: str | None = None):
    """loss_fn(model, x0, generator) for `course.train.fit`: t ~ U{0..T-1}, eps ~ N(0, I), the simple loss.

    Args:
        schedule: the noise schedule (its alpha_bar is used by q_sample).
        prediction: "epsilon" (Ho et al. 2020, Eq. 14) or "v_prediction" (Salimans & Ho 2022);
            None: the schedule's prediction_type (the recipe's: v_prediction).

    Returns:
        A function (model, x0 (B, 1, H, W), generator) -> 0-dim loss.
    """
    prediction = schedule.prediction_type if prediction is None else prediction
    if prediction not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction must be 'epsilon' or 'v_prediction', got {prediction!r}")
    alpha_bar = schedule.alpha_bar
    loss = ddpm.eps_loss if prediction == "epsilon" else ddpm.v_loss

    def loss_fn(model, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        t = torch.randint(0, schedule.num_train_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
        eps = torch.randn(x0.shape, generator=generator).to(x0.device)
        return loss(lambda xt, tt: model(xt, tt), x0, t, eps, alpha_bar)

    return loss_fn


def model_config(unet: UNetConfig = UNET_CONFIG, schedule: ddpm.Schedule = SCHEDULE) -> dict[str, Any]:
    """What the manifest stores: enough to rebuild the U-Net and to sample with the right schedule."""
    return {"unet": asdict(unet), "schedule": asdict(schedule), "sample_steps": SAMPLE_STEPS, "sample_eta": SAMPLE_ETA}


def train_ddpm_fashion(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    """Train the shipped model with the course's loop; the EMA weights are the ones shipped."""
    from course.train import fit

    torch.manual_seed(0)
    model = UNet(UNET_CONFIG)
    result = fit(model, make_loss(), fashion_batch, train_config(steps), run_dir, resume=not fresh, progress=progress)
    return Trained(
        model=result.ema if result.ema is not None else result.model, config=model_config(),
        wall_time_s=result.wall_time_s, steps=result.step, interrupted=result.interrupted,
        notes=(f"EMA weights; v-prediction (v loss), cosine schedule with trailing spacing, batch {BATCH_SIZE}, "
               f"{result.step} steps on {torch.get_num_threads()} CPU thread(s). The first shipped model "
               "(eps-prediction, 1800 steps) had DDIM getting worse with more steps; see the recipe's SCHEDULE comment."),
    )


def load_ddpm_fashion(tensors: dict[str, torch.Tensor], config: dict) -> UNet:
    """Rebuild the U-Net from a manifest config and load its (already verified) weights."""
    from course import checkpoints

    unet_cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in config["unet"].items()}  # JSON lists -> tuples
    model = UNet(UNetConfig(**unet_cfg))
    checkpoints.load_into(model, tensors, source="ddpm-fashion")
    model.schedule = schedule_of(config)  # what it was trained with: the samplers below read it (`model_schedule`)
    return model.eval()


def schedule_of(config: dict) -> ddpm.Schedule:
    """The noise schedule a manifest config was trained with."""
    return ddpm.Schedule(**config["schedule"])


def model_schedule(model: UNet, schedule: ddpm.Schedule | None = None) -> ddpm.Schedule:
    """`schedule` if given, else the one a loaded model was trained with (`load_ddpm_fashion` records it), else SCHEDULE.

    So a checkpoint of an earlier recipe (e.g. the first, eps-predicting ddpm-fashion) is sampled as it was trained.
    """
    return schedule if schedule is not None else getattr(model, "schedule", SCHEDULE)


# ----------------------------------------------------------------------------- sampling


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 1, H, W) in [-1, 1] -> uint8 (B, H, W, 1), the layout `course.world.metrics` reads."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 1)


@torch.no_grad()
def generate_x0(model: UNet, n: int, steps: int, method: str = "ddim", *, schedule: ddpm.Schedule | None = None,
                eta: float = 0.0, seed: int = 0, batch_size: int = 256, progress: bool = False,
                use_clipped_model_output: bool = False) -> torch.Tensor:
    """`n` samples from the model with `steps` DDPM or DDIM steps, (n, 1, 32, 32) in [-1, 1].

    One CPU generator seeded with `seed` draws all the noise, batch after batch, so the result
    depends on (seed, n, batch_size, steps, method) and not on the device.

    Args:
        model: the denoiser, eps_theta(xt, t).
        n: number of images.
        steps: sampler steps on the respaced chain (1 ... T); DDPM with steps = T is Ho et al.'s sampler.
        method: "ddpm" (ancestral) or "ddim".
        schedule: the schedule the model was trained with (None: `model_schedule(model)`).
        eta: DDIM noise (0 = deterministic).
        seed: seeds the generator.
        batch_size: images per model call.
        progress: a progress bar per batch.
        use_clipped_model_output: DDIM: eps_hat recomputed from the clipped x0_hat (`ddpm.ddim_step`).

    Returns:
        (n, 1, 32, 32) float32 on the CPU.
    """
    schedule = model_schedule(model, schedule)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x_T = torch.randn((b, 1, 32, 32), generator=generator).to(device)
        out.append(ddpm.sample(lambda xt, t: model(xt, t), None, schedule, steps, method, eta,
                               generator, x_T=x_T, progress=progress,
                               use_clipped_model_output=use_clipped_model_output).cpu())
    return torch.cat(out)


class DDPMFashionPipeline:
    """`course.pipelines.base.load("ddpm-fashion")`: unconditional Fashion-MNIST images.

    The rule for `steps`: it is the number of sampler steps; the sampler is DDIM (any steps from 1
    to 1000) with the recommended eta (`default_eta`, the config's "sample_eta": 1, stochastic; pass
    eta=0 for deterministic DDIM) unless `method="ddpm"`, the ancestral sampler (steps=1000 is Ho et
    al.'s original; fewer steps run it on a respaced chain).
    """

    def __init__(self, model: UNet, schedule: ddpm.Schedule = SCHEDULE, steps: int = SAMPLE_STEPS, eta: float = SAMPLE_ETA):
        self.model = model.eval()
        self.schedule = schedule
        self.default_steps, self.default_guidance = steps, 1.0  # unconditional: nothing to guide
        self.default_eta = eta

    def generate(self, prompts: list[str], *, steps: int | None = None, guidance: float | None = None, seed: int = 0,
                 method: str = "ddim", eta: float | None = None) -> np.ndarray:
        """One image per prompt; the prompts must be empty strings (the model is unconditional).

        steps None: `default_steps` (the recipe's SAMPLE_STEPS DDIM steps); guidance must be None or 1;
        eta None: `default_eta` (DDIM only: 0 deterministic, 1 as stochastic as DDPM).

        Returns:
            uint8 (N, 32, 32, 3): the grey image repeated on three channels.
        """
        if isinstance(prompts, str):
            raise ValueError("prompts must be a list of strings, one per image, e.g. [''] * 4")
        if any(p != "" for p in prompts):
            raise ValueError("ddpm-fashion is unconditional: it takes no text. Pass empty prompts, one per "
                             "image ([''] * N, or leave --prompt out on the command line)")
        steps = self.default_steps if steps is None else steps
        guidance = self.default_guidance if guidance is None else guidance
        if guidance != 1.0:
            raise ValueError(f"ddpm-fashion is unconditional, so there is nothing to guide: use guidance=1, got {guidance}")
        T = self.schedule.num_train_timesteps
        if not 1 <= steps <= T:
            raise ValueError(f"steps must be in 1 ... {T}, got {steps}")
        if method not in ("ddim", "ddpm"):
            raise ValueError(f"method must be 'ddim' or 'ddpm', got {method!r}")
        eta = self.default_eta if eta is None else eta
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be a number in 0 ... 1 (0: deterministic DDIM, 1: as stochastic as DDPM), got {eta!r}")
        if not prompts:
            return np.zeros((0, 32, 32, 3), np.uint8)
        x0 = generate_x0(self.model, len(prompts), steps, method, schedule=self.schedule, eta=eta, seed=seed)
        return np.repeat(to_uint8(x0), 3, axis=-1)  # (N, 32, 32, 3)


def ddpm_fashion_pipeline(model: UNet, config: dict) -> DDPMFashionPipeline:
    """The zoo's pipeline hook."""
    return DDPMFashionPipeline(model, schedule_of(config), config.get("sample_steps", SAMPLE_STEPS),
                               config.get("sample_eta", 0.0))  # configs before "sample_eta" sampled with eta = 0


# ----------------------------------------------------------------------------- FID

EVAL_N = 512  # images per FID, and the floor at the same n; DDPM-1000 is 512k image-steps (~25-60 min on one thread)
# (method, steps, variant): variant "" is the recipe's sampler (DDIM eta = 0 with the model's own eps_hat);
# "eta1" DDIM with eta = 1 (fast.ai's setting), "clipped_eps" eps_hat recomputed from the clipped x0_hat,
# "leading" the "leading" spacing (chains start at t < T-1), "noclip" x0_hat never clipped to [-1, 1].
# Cheap rows first, DDPM-1000 last.
EVAL_ROWS = (("ddim", 10, ""), ("ddim", 25, ""), ("ddim", 50, ""), ("ddim", 100, ""),
             ("ddim", 10, "eta1"), ("ddim", 25, "eta1"), ("ddim", 50, "eta1"), ("ddim", 100, "eta1"),
             ("ddim", 25, "clipped_eps"), ("ddim", 100, "clipped_eps"), ("ddim", 25, "noclip"), ("ddim", 100, "noclip"),
             ("ddim", 25, "leading"), ("ddim", 100, "leading"), ("ddpm", 1000, ""))
QUICK_ROWS = (("ddim", 25, ""), ("ddim", 10, ""))
VARIANTS = ("", "eta1", "clipped_eps", "leading", "noclip")


def row_key(method: str, steps: int, variant: str = "") -> str:
    """The manifest key of a table row: fid_ddpm_1000, fid_ddim_50, fid_ddim_eta1_50, ..."""
    return f"fid_{method}_{variant + '_' if variant else ''}{steps}"


def sample_row(model: UNet, n: int, method: str, steps: int, variant: str = "", *,
               schedule: ddpm.Schedule | None = None, seed: int = 0, progress: bool = False) -> torch.Tensor:
    """The n images of one table row, (n, 1, 32, 32) in [-1, 1] (see EVAL_ROWS for the variants)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown sampler variant {variant!r}; choose one of {VARIANTS}")
    schedule = model_schedule(model, schedule)
    overrides = {"leading": {"timestep_spacing": "leading"}, "noclip": {"clip_sample": False}}.get(variant, {})
    schedule = replace(schedule, **overrides)  # the schedule's own sampler settings for the other variants
    return generate_x0(model, n, steps, method, schedule=schedule, seed=seed, progress=progress,
                       eta=1.0 if variant == "eta1" else 0.0, use_clipped_model_output=variant == "clipped_eps")


def real_images(n: int, offset: int = 0) -> np.ndarray:
    """Test-set images offset ... offset+n-1, padded to 32x32, uint8 (n, 32, 32, 1)."""
    images, _ = fashion_mnist.load_fashion_mnist("test")
    if offset + n > len(images):
        raise ValueError(f"the test set has {len(images)} images; cannot take {n} from {offset}")
    return to_uint8(fashion_mnist.to_tensor_32(images[offset : offset + n]))


def _weights_key(model: UNet, n: int, seed: int) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, v in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return f"{h.hexdigest()[:16]}:n={n}:seed={seed}"


def fid_table(model: UNet, n: int = EVAL_N, rows=EVAL_ROWS, *, schedule: ddpm.Schedule | None = None,
              classifier=None, seed: int = 0, progress: bool = False, cache: Path | None = None) -> dict[str, float]:
    """FID (in the fashion-classifier's features) of each (method, steps[, variant]), with the real-vs-real floor.

    Generated images are compared with the first n test images; the floor compares those with
    the next n test images, so both sides of every number have n images.

    Args:
        rows: (method, steps) or (method, steps, variant) tuples, see EVAL_ROWS.
        cache: a JSON file that keeps each finished row (keyed by the weights, n and seed), so an
            interrupted evaluation resumes where it stopped.

    Returns:
        {"fid_floor": ..., "fid_ddpm_1000": ..., "fid_ddim_50": ..., ..., "fid_n": n}, rounded to 0.01.
    """
    import json

    from course.world import metrics
    from course.world.classifiers import load_fashion_classifier

    classifier = classifier or load_fashion_classifier()
    reference = real_images(n)
    key = f"{_weights_key(model, n, seed)}:{model_schedule(model, schedule)!r}" if cache is not None else None
    done = {}
    if cache is not None and Path(cache).is_file():
        stored = json.loads(Path(cache).read_text())
        done = stored.get("rows", {}) if stored.get("key") == key else {}
    out = {"fid_floor": round(metrics.fid(classifier, reference, real_images(n, offset=n)), 2)}
    for row in rows:
        method, steps, variant = (*row, "")[:3]
        name = row_key(method, steps, variant)
        if name not in done:
            x0 = sample_row(model, n, method, steps, variant, schedule=schedule, seed=seed, progress=progress)
            done[name] = round(metrics.fid(classifier, to_uint8(x0), reference), 2)
            if cache is not None:
                Path(cache).parent.mkdir(parents=True, exist_ok=True)
                Path(cache).write_text(json.dumps({"key": key, "rows": done}, indent=1))
        out[name] = done[name]
    out["fid_n"] = n
    return out


def evaluate_ddpm_fashion(model: UNet, quick: bool = False) -> dict[str, float]:
    """The manifest's metrics: FID of every EVAL_ROWS row at n = EVAL_N, and the floor at the same n.

    quick: n = 128 and DDIM-25 / DDIM-10 only (what the notebook recomputes live). The full table
    keeps its finished rows in runs/ddpm-fashion/fid_rows.json, so an interrupted evaluation resumes.
    """
    from course import paths

    if quick:
        return fid_table(model, 128, QUICK_ROWS)
    return fid_table(model, EVAL_N, EVAL_ROWS, progress=True, cache=paths.RUNS_DIR / "ddpm-fashion" / "fid_rows.json")


# ----------------------------------------------------------------------------- widgets

SCHEDULE_CHOICES = {"linear": ddpm.SCHEDULES["ddpm_linear"], "scaled_linear": ddpm.SCHEDULES["sd_scaled_linear"],
                    "cosine": ddpm.SCHEDULES["cosine"]}


def forward_process_figure(t: int = 250, schedule: str = "cosine", n: int = 6):
    """q(xt | x0) at timestep t for Fashion-MNIST test images, beside alpha_bar and SNR of the schedules.

    Row of images: xt = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps for n fixed images and noises; plots:
    alpha_bar_t and log10 SNR of every schedule, a marker at t on the chosen one.
    """
    from matplotlib.figure import Figure

    if schedule not in SCHEDULE_CHOICES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {list(SCHEDULE_CHOICES)}")
    sched = SCHEDULE_CHOICES[schedule]
    x0 = fashion_mnist.to_tensor_32(fashion_mnist.load_fashion_mnist("test")[0][:n])  # (n, 1, 32, 32)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    xt = ddpm.q_sample(x0, t, eps, sched.alpha_bar)
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 1.5])
    ab = float(sched.alpha_bar[t])
    for i, ax in enumerate(top.subplots(1, n)):
        ax.imshow(xt[i, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
        ax.set_axis_off()
    top.suptitle(f"xt at t={t}, {schedule} schedule: sqrt(alpha_bar) = {ab ** 0.5:.3f} of the image is left", fontsize=10)
    ax_ab, ax_snr = bottom.subplots(1, 2)
    for name, s in SCHEDULE_CHOICES.items():
        ax_ab.plot(s.alpha_bar.numpy(), label=name, lw=2 if name == schedule else 1)
        ax_snr.plot(torch.log10(s.snr).numpy(), label=name, lw=2 if name == schedule else 1)
    ax_ab.plot([t], [ab], "ko")
    ax_snr.plot([t], [float(torch.log10(sched.snr[t]))], "ko")
    ax_ab.set(title="alpha_bar_t", xlabel="t")
    ax_snr.set(title="log10 SNR_t", xlabel="t")
    ax_ab.legend(fontsize=8)
    return fig


def steps_figure(model: UNet, steps: int = 25, n: int = 16, seed: int = 0, schedule: ddpm.Schedule | None = None) -> np.ndarray:
    """A 2 x n/2 grid of DDIM samples with `steps` steps, the same starting noise for every `steps`.

    Returns:
        uint8 image (2*32, n/2*32), ready for `course.widgets.explore`.
    """
    images = to_uint8(generate_x0(model, n, steps, "ddim", schedule=schedule, seed=seed))[..., 0]  # (n, 32, 32)
    return images.reshape(2, n // 2, 32, 32).transpose(0, 2, 1, 3).reshape(64, n // 2 * 32)  # (64, n/2 * 32)


def bench_sampler(quick: bool) -> dict[str, float]:
    """`python -m course bench`: the recipe's U-Net, per training step (batch 64) and per sampled image-step."""
    import time

    model = UNet(UNET_CONFIG)
    x, t = torch.randn(64, 1, 32, 32), torch.randint(0, 1000, (64,))
    loss = make_loss()
    g = torch.Generator().manual_seed(0)
    best_train = best_sample = float("inf")
    for _ in range(2 if quick else 5):
        start = time.perf_counter()
        loss(model, x, g).backward()
        best_train = min(best_train, time.perf_counter() - start)
        with torch.no_grad():
            start = time.perf_counter()
            model(x, t)
            best_sample = min(best_sample, time.perf_counter() - start)
    return {"params": sum(p.numel() for p in model.parameters()), "train_step_batch64_s": round(best_train, 3),
            "sample_ms_per_image_step": round(1000 * best_sample / 64, 2),
            "ddpm_1000_s_per_image": round(best_sample / 64 * 1000, 2)}
