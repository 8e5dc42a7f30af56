"""Chapter 06: `dit-shapes`, a class-conditional DiT on vae-shapes latents, trained as DiT was.

The network is `course.nn.dit.DiT`; this module chooses its size, data, loss and sampler:

- Classes: one per (colour, shape) pair, 6 x 3 = 18, plus the null class for guidance. A class
  model takes prompts of exactly the form "a {colour} {shape}" (`class_of`); position and size are
  left to chance, as an ImageNet class leaves the pose to chance.
- Data: 16,384 one-object Shapes scenes, encoded once by the frozen `vae-shapes` (8x8x4 latents)
  and cached, so the CPU time goes to the denoiser.
- Objective: DDPM's linear schedule (T = 1000, beta 1e-4 -> 0.02) with learned sigma: the model
  predicts eps and the variance interpolation v, trained with Improved DDPM's hybrid loss
  L_simple + 0.001 L_vlb (`course.diffusion.vlb`); labels dropped to the null class 10% of the
  time for classifier-free guidance. All as DiT's recipe, at 1/6 of DiT-XL's width.
- Sampling: ancestral DDPM with the learned variance on a respaced chain, CFG on all 4 latent
  channels (DiT's code guides 3 of 4, `[:, :3]`, a slice later projects copied; its appendix
  found all 4 at scale 1.375 slightly better, FID 2.20 vs 2.27), decoded by vae-shapes.
- Evaluation: Shapes-FID against real one-object images (with the real-vs-real floor at the same
  n) and class accuracy, the ShapesEval full match on "a {colour} {shape}".

The ablations of the chapter (conditioning, patch size, learned vs fixed variance) are in
`course.recipes.dit_ablations`. Reproduce the shipped weights with
`python -m course train dit-shapes --ship`.

Shape letters: B batch, C = 4 latent channels, h = w = 8 latent size.
Ref: Peebles & Xie 2023, Sec. 4 (training recipe); Nichol & Dhariwal 2021 (learned sigma).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from course.diffusion import ddpm, vlb
from course.nn.dit import DiT, DiTConfig, drop_labels, get_preset
from course.world import shapes
from course.zoo import Trained

CLASSES: tuple[tuple[str, str], ...] = tuple((c, s) for c in shapes.PALETTE for s in shapes.SHAPES)  # 18
SCHEDULE = ddpm.Schedule(beta_schedule="linear", clip_sample=False, variance_type="learned_range",
                         timestep_spacing="linspace")  # DiT's: linear betas, learned sigma, no clipping of latents
DIT_SHAPES = get_preset("dit-shapes", num_classes=len(CLASSES))  # D 192, depth 6, 3 heads, p = 2: 4.2 M
VAE = "vae-shapes"
BANK_SIZE = 16_384  # one-object scenes encoded once
BANK_SEED = 606
BATCH_SIZE = 128
STEPS = 3000  # ~0.6 s per step alone on one CPU thread (~1.2 s beside the ablation runs): 30-60 min
LR = 1e-3  # DiT: 1e-4 at batch 256 for 400K+ steps; 10x for a run 100x shorter (a 600-step pilot: 3e-4 barely used the label)
CLASS_DROPOUT = 0.1
EVAL_SEED = 31_415  # the real one-object images that Shapes-FID compares with
EVAL_N = 512
SAMPLE_STEPS = 50  # the recommended sampler: DDPM with the learned variance, 50 respaced steps
GUIDANCE = 3.0  # the recommended guidance scale (see the guidance sweep in the manifest)


# ----------------------------------------------------------------------------- classes and prompts
def class_prompt(label: int) -> str:
    """The prompt of class `label`: "a {colour} {shape}"."""
    colour, shape = CLASSES[label]
    return f"a {colour} {shape}"


def class_of(prompt: str) -> int:
    """The class of a prompt "a {colour} {shape}"; anything else is refused with the list of classes."""
    m = re.fullmatch(r"an? (\w+) (\w+)", " ".join(prompt.lower().split()))
    if m and (m.group(1), m.group(2)) in CLASSES:
        return CLASSES.index((m.group(1), m.group(2)))
    listing = ", ".join(f'"{class_prompt(i)}"' for i in range(len(CLASSES)))
    raise ValueError(f"a class-conditional model takes one of its {len(CLASSES)} class prompts, not {prompt!r}: "
                     f"{listing}")


def label_of(scene: shapes.Scene) -> int:
    (obj,) = scene.objects
    return CLASSES.index((obj.color, obj.shape))


# ----------------------------------------------------------------------------- data
def class_bank(codec: nn.Module, n: int = BANK_SIZE, seed: int = BANK_SEED, cache: Path | None = None):
    """(labels (n,), z0 (n, 4, 8, 8)): one-object scenes, their classes and their normalised latents."""
    from course.recipes.sd1_shapes import latent_bank

    scenes, z0 = latent_bank(codec, n, seed, cache, max_objects=1)
    return torch.tensor([label_of(s) for s in scenes]), z0


def make_batch_fn(labels: torch.Tensor, z0: torch.Tensor):
    def batch(step: int, batch_size: int, generator: torch.Generator):
        i = torch.randint(0, len(z0), (batch_size,), generator=generator)
        return z0[i], labels[i]
    return batch


def make_loss(schedule: ddpm.Schedule = SCHEDULE, class_dropout: float = CLASS_DROPOUT):
    """The DiT loss: hybrid (learned sigma) or simple (fixed sigma), with label dropout for CFG."""
    def loss(model: DiT, batch, generator: torch.Generator) -> torch.Tensor:
        z0, y = batch
        B = z0.shape[0]
        t = torch.randint(0, schedule.num_train_timesteps, (B,), generator=generator).to(z0.device)
        eps = torch.randn(z0.shape, generator=generator).to(z0.device)
        y = drop_labels(y, class_dropout, model.config.num_classes, generator)
        xt = ddpm.q_sample(z0, t, eps, schedule.alpha_bar)
        out = model(xt, t, y)  # (B, C_out, h, w)
        if model.config.learn_sigma:
            return vlb.hybrid_loss(out, z0, xt, t, eps, schedule)[0]
        return ((out - eps) ** 2).mean()
    return loss


def _frozen_codec():
    from course import checkpoints
    from course.nn.codec import load_codec_from

    tensors, entry = checkpoints.load_checkpoint(VAE)
    return load_codec_from(tensors, entry["config"]).eval().requires_grad_(False), entry["sha256"]


def train_dit(config: DiTConfig, steps: int, run_dir: Path | None, *, fresh: bool = False, progress: bool = False,
              seed: int = 0, batch_size: int = BATCH_SIZE, lr: float = LR, schedule: ddpm.Schedule = SCHEDULE,
              bank: tuple[torch.Tensor, torch.Tensor] | None = None, warmup_steps: int | None = None):
    """Train a DiT on the class bank; returns (TrainResult, seconds spent building the bank).

    Constant learning rate after a short warm-up (DiT trains at a constant 1e-4), so a run can be
    resumed to more steps and stay the same run; EMA of the weights (DiT: 0.9999; 0.999 here).
    """
    from course.train import TrainConfig, fit

    t0 = time.perf_counter()
    if bank is None:
        codec, _ = _frozen_codec()
        bank = class_bank(codec, cache=None if run_dir is None else Path(run_dir) / "class_bank.safetensors")
    bank_s = time.perf_counter() - t0
    torch.manual_seed(seed)
    model = DiT(config)
    warmup_steps = min(200, steps // 10) if warmup_steps is None else warmup_steps
    train_config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                               schedule="constant", ema_decay=0.999, checkpoint_every=250, log_every=50, seed=seed)
    result = fit(model, make_loss(schedule), make_batch_fn(*bank), train_config, run_dir, resume=not fresh,
                 progress=progress)
    return result, bank_s


def model_config(config: DiTConfig, vae_sha: str) -> dict:
    return dataclasses.asdict(config) | {"schedule": dataclasses.asdict(SCHEDULE), "parts": {VAE: vae_sha},
                                         "sample_steps": SAMPLE_STEPS, "guidance": GUIDANCE}


def train_dit_shapes(steps: int | None, run_dir: Path, fresh: bool, progress: bool) -> Trained:
    """Train dit-shapes (zoo train contract); Trained.model is the EMA DiT."""
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    steps = STEPS if steps is None else steps
    _, vae_sha = _frozen_codec()
    result, bank_s = train_dit(DIT_SHAPES, steps, run_dir, fresh=fresh, progress=progress)
    notes = (f"{result.step} steps at batch {BATCH_SIZE}, constant lr {LR} after warm-up, EMA 0.999, hybrid loss "
             f"(learned sigma), class dropout {CLASS_DROPOUT}; class bank of {BANK_SIZE} one-object scenes encoded "
             f"in {bank_s:.0f} s; ~{result.wall_time_s / 60:.0f} min on the CPU; frozen {VAE}.")
    return Trained(model=(result.ema if result.ema is not None else result.model).eval(),
                   config=model_config(DIT_SHAPES, vae_sha), wall_time_s=result.wall_time_s, steps=result.step,
                   interrupted=result.interrupted, notes=notes)


def dit_config_of(config: dict) -> DiTConfig:
    names = {f.name for f in dataclasses.fields(DiTConfig)}
    return DiTConfig(**{k: v for k, v in config.items() if k in names})


def load_dit_shapes_from(tensors: dict[str, torch.Tensor], config: dict) -> DiT:
    """Rebuild dit-shapes from checkpoint tensors (zoo load contract); refuses a vae-shapes it was not trained on."""
    from course import checkpoints
    from course.recipes.sd1_shapes import check_parts

    check_parts("dit-shapes", config.get("parts", {}), {VAE: checkpoints.manifest_entry(VAE)["sha256"]})
    model = DiT(dit_config_of(config))
    checkpoints.load_into(model, tensors, source="a dit-shapes checkpoint")
    return model.eval()


# ----------------------------------------------------------------------------- sampling
def guided_model_fn(model: DiT, labels: torch.Tensor, guidance: float, learned_sigma: bool = True):
    """(xt, t) -> the guided output: eps_u + w (eps_c - eps_u) on all channels, v from the conditional half.

    With `learned_sigma=False` only eps is returned, for sampling with a fixed variance.
    """
    C = model.config.in_channels
    null = torch.full_like(labels, model.config.null_class)

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if guidance == 1.0:
            out = model(x, t, labels)
        else:
            both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))  # (2B, C_out, h, w)
            cond, uncond = both.chunk(2)
            eps = uncond[:, :C] + guidance * (cond[:, :C] - uncond[:, :C])  # all 4 channels, not DiT's [:, :3]
            out = torch.cat([eps, cond[:, C:]], dim=1)
        return out if learned_sigma else out[:, :C]
    return fn


@torch.no_grad()
def sample_latents(model: DiT, labels: torch.Tensor, *, steps: int = SAMPLE_STEPS, guidance: float = GUIDANCE,
                   seed: int = 0, method: str = "ddpm", variance: str = "learned_range", eta: float = 0.0,
                   schedule: ddpm.Schedule = SCHEDULE, batch_size: int = 512) -> torch.Tensor:
    """Class-conditional latents z0 (B, 4, 8, 8), DDPM (learned or fixed variance) or DDIM, with CFG.

    Args:
        variance: "learned_range" (the model's Sigma), "fixed_small" (beta_tilde) or "fixed_large" (beta).
    """
    if not math.isfinite(guidance) or not 0 <= guidance <= 50:
        raise ValueError(f"guidance must be a finite number in [0, 50], got {guidance}")
    if variance not in ddpm.VARIANCE_TYPES:
        raise ValueError(f"variance must be one of {ddpm.VARIANCE_TYPES}, got {variance!r}")
    learned = variance == "learned_range"
    if learned and not model.config.learn_sigma:
        raise ValueError("this model predicts no variance (learn_sigma=False): use 'fixed_small' or 'fixed_large'")
    sched = dataclasses.replace(schedule, variance_type=variance)
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    cfg = model.config
    out = []
    for i in range(0, len(labels), batch_size):
        y = labels[i : i + batch_size].to(device)
        x_T = torch.randn(len(y), cfg.in_channels, cfg.input_size, cfg.input_size, generator=g).to(device)
        fn = guided_model_fn(model, y, guidance, learned_sigma=learned)
        z = ddpm.sample(fn, None, sched, steps, method=method, eta=eta, generator=g, x_T=x_T)
        out.append(z)
    z0 = torch.cat(out)
    if not torch.isfinite(z0).all():
        raise FloatingPointError("the sampler produced non-finite latents: the weights or the settings are broken")
    return z0


class DiTShapesPipeline:
    """`course.pipelines.base.load("dit-shapes")`: class prompts "a {colour} {shape}" -> uint8 images."""

    def __init__(self, model: DiT, codec: nn.Module, steps: int = SAMPLE_STEPS, guidance: float = GUIDANCE):
        self.model, self.codec = model.eval(), codec.eval()
        self.default_steps, self.default_guidance = steps, guidance

    def generate(self, prompts: list[str], *, steps: int | None = None, guidance: float | None = None, seed: int = 0,
                 method: str = "ddpm", variance: str = "learned_range") -> np.ndarray:
        """One image per prompt; steps and guidance default to the model's recommended ones.

        Returns:
            uint8 (N, 64, 64, 3).
        """
        from course.recipes.vae_shapes import decode_latents

        if isinstance(prompts, str):
            raise ValueError('prompts must be a list of strings, one per image, e.g. ["a red circle"]')
        if len(prompts) == 0:
            raise ValueError("give at least one prompt")
        labels = torch.tensor([class_of(p) for p in prompts])
        steps = self.default_steps if steps is None else steps
        guidance = self.default_guidance if guidance is None else guidance
        if not 1 <= steps <= SCHEDULE.num_train_timesteps:
            raise ValueError(f"steps must be in 1 ... {SCHEDULE.num_train_timesteps}, got {steps}")
        z0 = sample_latents(self.model, labels, steps=steps, guidance=guidance, seed=seed, method=method,
                            variance=variance)
        return decode_latents(self.codec, z0)


def dit_shapes_pipeline(model: DiT, config: dict) -> DiTShapesPipeline:
    codec, _ = _frozen_codec()
    return DiTShapesPipeline(model, codec, config.get("sample_steps", SAMPLE_STEPS), config.get("guidance", GUIDANCE))


def load(checkpoint: str | Path | None = None) -> DiTShapesPipeline:
    """The shipped dit-shapes pipeline (or one from `checkpoint`)."""
    from course import checkpoints

    tensors, entry = checkpoints.load_checkpoint(None if checkpoint else "dit-shapes", checkpoint)
    return dit_shapes_pipeline(load_dit_shapes_from(tensors, entry["config"]), entry["config"])


# ----------------------------------------------------------------------------- evaluation
def balanced_labels(n: int) -> torch.Tensor:
    return torch.arange(n) % len(CLASSES)


def real_one_object(n: int, seed: int = EVAL_SEED) -> np.ndarray:
    """n real one-object images, classes balanced as `balanced_labels`, positions and sizes at random."""
    rng = np.random.default_rng(seed)
    scenes = []
    for label in balanced_labels(n).tolist():
        colour, shape = CLASSES[label]
        base = shapes.Scene((shapes.SceneObject(colour, shape, None, None),))
        scenes.append(shapes.complete_scene(base, seed=int(rng.integers(2**31))))
    return shapes.render_batch(scenes)


def image_metrics(images: np.ndarray, labels: torch.Tensor, classifier=None, seed: int = EVAL_SEED) -> dict[str, float]:
    """Shapes-FID against real one-object images, the floor at the same n, and class accuracy."""
    from course.world import metrics
    from course.world.classifiers import load_shapes_classifier

    classifier = classifier or load_shapes_classifier()
    n = len(images)
    fid = metrics.fid(classifier, images, real_one_object(n, seed))
    floor = metrics.fid(classifier, real_one_object(n, seed + 1), real_one_object(n, seed + 2))
    acc = metrics.shapes_eval(images, [class_prompt(i) for i in labels.tolist()]).full_match
    return {"fid": round(fid, 2), "fid_floor": round(floor, 2), "class_accuracy": round(acc, 4), "n": n}


@torch.no_grad()
def evaluate_model(model: DiT, codec: nn.Module, n: int = EVAL_N, **sampler) -> dict[str, float]:
    from course.recipes.vae_shapes import decode_latents

    labels = balanced_labels(n)
    return image_metrics(decode_latents(codec, sample_latents(model, labels, **sampler)), labels)


@torch.no_grad()
def evaluate_dit_shapes(model: DiT, quick: bool = False) -> dict[str, float]:
    """The manifest's metrics: the recommended sampler, and a guidance sweep (zoo evaluate contract)."""
    codec, _ = _frozen_codec()
    n = 144 if quick else EVAL_N
    out = {}
    for w in ((1.0, GUIDANCE) if quick else (1.0, 1.5, GUIDANCE, 5.0)):
        m = evaluate_model(model, codec, n, steps=SAMPLE_STEPS, guidance=w)
        out |= {f"w{w:g}_fid": m["fid"], f"w{w:g}_class_accuracy": m["class_accuracy"]}
        out["fid_floor"], out["n"] = m["fid_floor"], m["n"]
    return out


# ----------------------------------------------------------------------------- the chapter's figures
@torch.no_grad()
def gate_profile(model: DiT, t_values=(0, 100, 250, 500, 750, 999), label: int = 0) -> np.ndarray:
    """Mean |alpha| of each block's two gates at each t: (len(t_values), depth, 2) (attention, MLP).

    At init every gate is 0 (each block the identity); training opens them, by how much per block
    and per noise level is what this measures.
    """
    device = next(model.parameters()).device
    t = torch.tensor(t_values, device=device)
    _, _, c = model.condition(t, torch.full_like(t, label))  # (n, D)
    return torch.stack([block.gates(c).abs().mean(-1) for block in model.blocks], dim=1).cpu().numpy()


def class_explorer(pipe: DiTShapesPipeline):
    """Class x guidance x steps: four samples of one class prompt (the same four seeds every time)."""
    from course.recipes.vae_shapes import _strip
    from course.widgets import Choice, Slider, explore

    def panel(prompt: str, guidance: float, steps: int) -> np.ndarray:
        return _strip(list(pipe.generate([prompt] * 4, steps=steps, guidance=guidance, seed=0)))

    return explore(panel, static={"guidance": [1.0, 3.0, 6.0], "steps": [10, 50]},
                   prompt=Choice(tuple(class_prompt(i) for i in range(len(CLASSES))), "a red circle"),
                   guidance=Slider(0.0, 8.0, 0.5, GUIDANCE), steps=Choice((10, 25, 50, 100, 250), SAMPLE_STEPS))
