"""Chapter 09's QK-norm experiment: attention logits grow at a high learning rate, unless q and k are normalised.

SD3 (Esser et al. 2024, Sec. 5.3.2) saw the attention logits of large MM-DiTs grow without bound
in high-resolution training, until the softmax saturated and the loss diverged; RMSNorm on q and k
of every head (as ViT-22B did) fixed it. The same happens in miniature here: a small MM-DiT (D 64,
4 blocks, 4 heads) learns rectified flow on the one-object Shapes latents (the class bank of
chapter 06) at a high learning rate, with and without `qk_norm`, and every `LOG_EVERY` steps the
largest logit q . k / sqrt(hd) of each block is measured on a fixed probe batch.

The "text" is a stand-in, so that the experiment needs no text encoder: each class is two tokens,
a fixed random vector for its colour word and one for its shape word, and their mean is the pooled
vector. Both streams and the joint attention are the real `course.nn.mmdit` ones.

Run it with `python -m course.recipes.qk_norm` (about 10 minutes on one CPU thread, measured beside
other jobs: `RESULT["seconds"]`; each setting is kept in runs/qk-norm/ and skipped when done). The notebook reads the stored curves from
`RESULT` below, written from that run's runs/qk-norm/result.json.

Shape letters: B batch, C latent channels, h, w latent size, S text tokens, E text width.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from course.diffusion import flow
from course.nn.mmdit import MMDiT, MMDiTConfig

CONFIG = MMDiTConfig(sample_size=8, patch_size=2, in_channels=4, out_channels=4, depth=4, num_heads=4, head_dim=16,
                     context_dim=32, pooled_dim=32, pos_embed_max_size=4)
STEPS = 1000
BATCH_SIZE = 64
LOG_EVERY = 10
SETTINGS = {  # name -> (learning rate, qk_norm)
    "lr 1e-3": (1e-3, False),
    "lr 1e-3 + QK-norm": (1e-3, True),
    "lr 1e-2": (1e-2, False),
    "lr 1e-2 + QK-norm": (1e-2, True),
}
SEED = 0
BANK_N = 4096  # one-object latents, when the chapter 06 bank is not cached yet


def class_text(labels: torch.Tensor, n_colors: int, n_shapes: int, dim: int, seed: int = 9
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stand-in text for class labels: (context (B, 2, E): [colour word, shape word], pooled (B, E): their mean)."""
    g = torch.Generator().manual_seed(seed)
    colors, shapes_ = torch.randn(n_colors, dim, generator=g), torch.randn(n_shapes, dim, generator=g)
    context = torch.stack([colors[labels // n_shapes], shapes_[labels % n_shapes]], dim=1)  # (B, 2, E)
    return context, context.mean(dim=1)  # (B, 2, E), (B, E)


def flow_loss(model: MMDiT, batch, generator: torch.Generator) -> torch.Tensor:
    """Rectified flow: xt = (1 - t) x0 + t eps, loss ||v(xt, t) - (eps - x0)||^2, t ~ U(0, 1)."""
    z0, context, pooled = batch
    t = torch.rand(z0.shape[0], generator=generator)
    eps = torch.randn(z0.shape, generator=generator)
    xt, u = flow.rf_path(z0, eps, t)
    return ((model(xt, t * 1000, context, pooled) - u) ** 2).mean()


@torch.no_grad()
def max_logits(model: MMDiT, probe) -> list[float]:
    """The largest attention logit of each block on the probe batch (z0, context, pooled) at t = 0.5."""
    z0, context, pooled = probe
    g = torch.Generator().manual_seed(1)
    xt, _ = flow.rf_path(z0, torch.randn(z0.shape, generator=g), torch.full((z0.shape[0],), 0.5))
    logits: list = []
    model(xt, torch.full((z0.shape[0],), 500.0), context, pooled, logits=logits)
    return [float(v) for v in logits]


def load_bank(n: int = BANK_N):
    """(labels, z0) of one-object scenes: chapter 06's cached class bank if present, else n freshly encoded."""
    from course import paths
    from course.recipes import dit_shapes

    cache = paths.RUNS_DIR / "dit-shapes" / "class_bank.safetensors"
    codec, _ = dit_shapes._frozen_codec()
    if cache.is_file():
        return dit_shapes.class_bank(codec, cache=cache)
    return dit_shapes.class_bank(codec, n=n)


def run_setting(lr: float, qk_norm: bool, bank, steps: int = STEPS, seed: int = SEED) -> dict:
    """Train one model; returns {"steps", "max_logit" (n_logs, depth), "loss" (n_logs,), "seconds"}."""
    from course.recipes.dit_shapes import CLASSES
    from course.train import TrainConfig, fit
    from course.world import shapes

    labels, z0 = bank
    n_colors, n_shapes = len(shapes.PALETTE), len(shapes.SHAPES)
    if len(CLASSES) != n_colors * n_shapes:
        raise RuntimeError("the class list is not colour x shape")
    context, pooled = class_text(labels, n_colors, n_shapes, CONFIG.context_dim)
    probe = (z0[:64], context[:64], pooled[:64])
    torch.manual_seed(seed)
    model = MMDiT(MMDiTConfig(**{**CONFIG.__dict__, "qk_norm": qk_norm}))

    def batch_fn(step: int, batch_size: int, generator: torch.Generator):
        i = torch.randint(0, len(z0), (batch_size,), generator=generator)
        return z0[i], context[i], pooled[i]

    log: dict = {"steps": [0], "max_logit": [max_logits(model, probe)], "loss": [float("nan")]}

    def on_log(step: int, loss: float) -> None:
        log["steps"].append(step)
        log["max_logit"].append(max_logits(model, probe))
        log["loss"].append(loss)

    t0 = time.perf_counter()
    config = TrainConfig(steps=steps, batch_size=BATCH_SIZE, lr=lr, warmup_steps=0, ema_decay=None, grad_clip=None,
                         log_every=LOG_EVERY, checkpoint_every=steps, seed=seed)
    fit(model, flow_loss, batch_fn, config, None, progress=False, on_log=on_log)
    log["seconds"] = time.perf_counter() - t0
    return log


def main(run_dir: str | Path = "runs/qk-norm") -> dict:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    bank = load_bank()
    results = {}
    for name, (lr, qk) in SETTINGS.items():
        path = run_dir / f"{name.replace(' ', '_').replace('+', 'plus')}.json"
        if path.is_file():
            results[name] = json.loads(path.read_text())
            continue
        results[name] = run_setting(lr, qk, bank)
        path.write_text(json.dumps(results[name]))
        print(f"{name}: final max logit per block {[round(v, 1) for v in results[name]['max_logit'][-1]]}, "
              f"loss {results[name]['loss'][-1]:.3f}, {results[name]['seconds']:.0f} s", flush=True)
    out = {"config": {k: v for k, v in CONFIG.__dict__.items()}, "steps": STEPS, "batch_size": BATCH_SIZE,
           "settings": {k: list(v) for k, v in SETTINGS.items()}, "results": results}
    (run_dir / "result.json").write_text(json.dumps(out))
    return out


if __name__ == "__main__":
    main()


# The stored measurement (runs/qk-norm/result.json of one `python -m course.recipes.qk_norm` run, every 20th
# step kept, rounded; "loss" is the mean of the LOG_EVERY steps before each point, None at step 0).
RESULT = {'command': 'python -m course.recipes.qk_norm',
 'steps': 1000,
 'batch_size': 64,
 'seconds': {'lr 1e-3': 109, 'lr 1e-3 + QK-norm': 109, 'lr 1e-2': 168, 'lr 1e-2 + QK-norm': 194},
 'results': {'lr 1e-3': {'steps': [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 220, 240, 260, 280, 300, 320, 340,
                                   360, 380, 400, 420, 440, 460, 480, 500, 520, 540, 560, 580, 600, 620, 640, 660,
                                   680, 700, 720, 740, 760, 780, 800, 820, 840, 860, 880, 900, 920, 940, 960, 980,
                                   1000],
                         'max_logit': [[3.75, 3.49, 4.77, 3.62], [4.93, 7.44, 7.91, 6.88], [3.41, 4.37, 9.12, 8.65],
                                       [3.21, 4.22, 13.16, 8.56], [3.25, 3.83, 15.37, 9.38],
                                       [3.19, 3.5, 16.27, 10.35], [3.21, 5.03, 15.06, 12.17],
                                       [3.5, 3.57, 16.43, 13.42], [2.86, 4.35, 13.59, 13.24],
                                       [3.08, 5.28, 12.47, 11.01], [3.1, 4.97, 19.1, 15.55],
                                       [3.29, 5.14, 15.22, 14.29], [3.8, 5.77, 15.1, 14.61],
                                       [3.92, 5.92, 14.46, 14.18], [3.85, 5.43, 15.93, 12.48],
                                       [3.94, 5.72, 14.54, 13.45], [4.07, 5.83, 16.84, 11.81],
                                       [3.66, 6.52, 15.3, 12.07], [4.3, 6.79, 17.66, 15.89],
                                       [4.4, 7.25, 16.94, 14.93], [4.08, 7.6, 16.23, 16.2],
                                       [3.96, 7.24, 16.41, 15.94], [4.1, 7.46, 17.24, 18.39],
                                       [3.67, 7.99, 16.33, 15.66], [3.87, 7.48, 12.37, 14.07],
                                       [4.49, 7.78, 14.52, 13.23], [4.59, 8.18, 17.3, 12.04],
                                       [4.63, 7.68, 15.81, 14.45], [4.2, 7.6, 13.84, 13.38],
                                       [4.74, 7.56, 15.06, 13.42], [5.08, 8.5, 13.06, 12.54],
                                       [4.8, 8.29, 13.31, 12.91], [4.51, 8.0, 14.59, 13.2], [4.3, 7.7, 15.4, 13.54],
                                       [4.33, 8.32, 14.47, 12.64], [5.02, 7.49, 12.25, 12.59],
                                       [5.11, 7.61, 12.24, 13.59], [5.3, 8.05, 12.18, 11.17],
                                       [5.27, 7.56, 14.38, 12.0], [5.07, 7.67, 15.04, 11.59],
                                       [5.53, 7.54, 14.38, 11.4], [5.71, 8.46, 13.01, 10.89],
                                       [4.76, 7.93, 12.15, 12.33], [6.25, 7.41, 13.69, 10.6],
                                       [6.59, 7.09, 13.09, 10.79], [6.22, 8.55, 14.65, 13.12],
                                       [6.39, 7.57, 14.14, 10.95], [6.29, 7.85, 12.72, 9.62],
                                       [5.94, 8.04, 11.65, 10.04], [5.89, 6.67, 12.52, 9.47],
                                       [6.55, 7.08, 12.14, 11.48]],
                         'loss': [None, 1.5553, 1.0173, 0.7916, 0.6391, 0.577, 0.5528, 0.5058, 0.5292, 0.4975, 0.4956,
                                  0.4666, 0.4726, 0.467, 0.454, 0.4457, 0.4459, 0.4425, 0.4202, 0.4056, 0.421, 0.4199,
                                  0.4065, 0.4186, 0.387, 0.406, 0.3963, 0.3737, 0.3903, 0.3735, 0.3517, 0.3664,
                                  0.3505, 0.3578, 0.3574, 0.3412, 0.3674, 0.3401, 0.3511, 0.3204, 0.3189, 0.3105,
                                  0.3505, 0.3111, 0.3249, 0.2986, 0.292, 0.3231, 0.2861, 0.3314, 0.3128]},
             'lr 1e-3 + QK-norm': {'steps': [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 220, 240, 260, 280, 300,
                                             320, 340, 360, 380, 400, 420, 440, 460, 480, 500, 520, 540, 560, 580,
                                             600, 620, 640, 660, 680, 700, 720, 740, 760, 780, 800, 820, 840, 860,
                                             880, 900, 920, 940, 960, 980, 1000],
                                   'max_logit': [[3.33, 3.29, 3.48, 3.15], [3.34, 3.65, 3.67, 3.47],
                                                 [3.06, 3.37, 3.65, 3.48], [3.45, 3.27, 3.8, 3.54],
                                                 [3.34, 3.39, 3.74, 3.36], [3.35, 3.46, 3.76, 3.28],
                                                 [3.3, 3.35, 3.79, 3.54], [3.29, 3.43, 3.82, 3.59],
                                                 [3.4, 3.33, 3.75, 3.58], [3.35, 3.48, 3.62, 3.48],
                                                 [3.26, 3.29, 3.79, 3.54], [3.13, 3.37, 3.84, 3.55],
                                                 [3.24, 3.26, 3.73, 3.46], [3.3, 3.2, 3.6, 3.51],
                                                 [3.29, 3.18, 3.65, 3.47], [3.2, 3.28, 3.68, 3.56],
                                                 [3.18, 3.36, 3.7, 3.39], [3.31, 3.44, 3.68, 3.33],
                                                 [3.3, 3.35, 3.67, 3.31], [3.4, 3.43, 3.73, 3.29],
                                                 [3.41, 3.41, 3.74, 3.52], [3.34, 3.46, 3.83, 3.3],
                                                 [3.34, 3.62, 3.79, 3.31], [3.17, 3.57, 3.9, 3.28],
                                                 [3.35, 3.54, 3.82, 3.19], [3.39, 3.5, 3.78, 3.28],
                                                 [3.36, 3.45, 3.84, 3.43], [3.37, 3.4, 3.95, 3.48],
                                                 [3.31, 3.34, 3.72, 3.16], [3.26, 3.36, 3.8, 3.27],
                                                 [3.32, 3.41, 3.86, 3.42], [3.32, 3.37, 3.86, 3.48],
                                                 [3.31, 3.44, 3.83, 3.31], [3.37, 3.61, 3.95, 3.33],
                                                 [3.34, 3.54, 3.71, 3.39], [3.34, 3.4, 3.93, 3.25],
                                                 [3.36, 3.46, 3.96, 3.33], [3.36, 3.54, 3.9, 3.26],
                                                 [3.36, 3.59, 3.94, 3.42], [3.35, 3.7, 3.89, 3.48],
                                                 [3.28, 3.71, 3.78, 3.38], [3.34, 3.59, 3.9, 3.47],
                                                 [3.3, 3.7, 3.77, 3.48], [3.3, 3.72, 3.71, 3.42],
                                                 [3.33, 3.73, 3.85, 3.39], [3.33, 3.77, 3.82, 3.33],
                                                 [3.43, 3.8, 3.9, 3.47], [3.45, 3.83, 3.85, 3.37],
                                                 [3.41, 3.73, 3.69, 3.4], [3.4, 3.75, 3.81, 3.4],
                                                 [3.42, 3.75, 3.99, 3.48]],
                                   'loss': [None, 1.5554, 1.0205, 0.7924, 0.638, 0.5775, 0.5562, 0.5082, 0.5251,
                                            0.4971, 0.4933, 0.4649, 0.4693, 0.4627, 0.4508, 0.4413, 0.4419, 0.442,
                                            0.4204, 0.4014, 0.4208, 0.4223, 0.4039, 0.4208, 0.3873, 0.3975, 0.3921,
                                            0.3693, 0.384, 0.3695, 0.348, 0.366, 0.3479, 0.348, 0.355, 0.337, 0.3615,
                                            0.3367, 0.3492, 0.3163, 0.3139, 0.3094, 0.3415, 0.3102, 0.3202, 0.299,
                                            0.2885, 0.3196, 0.2855, 0.3302, 0.3137]},
             'lr 1e-2': {'steps': [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 220, 240, 260, 280, 300, 320, 340,
                                   360, 380, 400, 420, 440, 460, 480, 500, 520, 540, 560, 580, 600, 620, 640, 660,
                                   680, 700, 720, 740, 760, 780, 800, 820, 840, 860, 880, 900, 920, 940, 960, 980,
                                   1000],
                         'max_logit': [[3.75, 3.49, 4.77, 3.62], [12.03, 14.13, 15.29, 25.94],
                                       [17.55, 21.18, 19.79, 26.39], [15.12, 21.14, 14.35, 22.84],
                                       [14.57, 20.39, 12.22, 17.33], [16.5, 23.97, 15.46, 17.11],
                                       [16.39, 28.69, 17.37, 17.83], [15.27, 25.63, 12.9, 16.39],
                                       [16.11, 27.38, 17.72, 16.54], [12.61, 24.09, 17.31, 28.24],
                                       [11.4, 26.54, 16.14, 18.29], [13.79, 34.48, 21.87, 20.94],
                                       [12.52, 30.31, 16.48, 18.83], [15.95, 25.85, 21.36, 20.37],
                                       [15.39, 28.68, 17.72, 28.34], [18.36, 29.54, 27.29, 28.38],
                                       [17.36, 23.5, 20.34, 22.43], [15.37, 21.24, 19.35, 19.91],
                                       [20.48, 27.98, 21.14, 24.34], [20.67, 24.19, 24.22, 28.03],
                                       [16.56, 19.55, 24.57, 31.59], [13.63, 23.78, 28.31, 28.68],
                                       [15.7, 22.26, 25.0, 28.73], [13.65, 19.93, 22.23, 30.74],
                                       [13.8, 22.23, 23.37, 22.22], [15.58, 20.2, 18.58, 21.41],
                                       [17.2, 19.47, 17.47, 23.51], [17.74, 19.71, 17.56, 27.78],
                                       [14.71, 23.73, 23.33, 22.28], [19.78, 25.37, 28.41, 21.28],
                                       [19.37, 18.09, 22.46, 19.7], [21.82, 19.89, 29.19, 17.56],
                                       [17.89, 20.71, 26.9, 16.74], [15.3, 20.49, 25.8, 18.64],
                                       [15.49, 23.69, 24.03, 20.45], [16.57, 30.42, 20.58, 14.39],
                                       [20.3, 27.04, 24.13, 15.51], [17.6, 26.78, 25.98, 16.28],
                                       [19.28, 32.51, 31.51, 15.58], [16.67, 26.66, 26.16, 16.55],
                                       [15.17, 31.85, 27.1, 17.59], [15.04, 33.6, 30.38, 16.72],
                                       [12.97, 26.71, 32.08, 18.05], [14.92, 31.67, 23.44, 15.34],
                                       [11.5, 25.22, 20.09, 17.35], [11.52, 26.35, 20.57, 19.49],
                                       [11.0, 26.13, 21.23, 19.02], [9.97, 25.04, 19.34, 17.92],
                                       [13.72, 29.4, 26.07, 21.16], [14.21, 34.32, 26.22, 23.36],
                                       [15.01, 33.36, 32.91, 20.52]],
                         'loss': [None, 1.0768, 0.7242, 0.5749, 0.4914, 0.4731, 0.4676, 0.4292, 0.4381, 0.4252,
                                  0.4287, 0.4056, 0.4082, 0.4101, 0.3896, 0.39, 0.3891, 0.3934, 0.3761, 0.3601,
                                  0.3637, 0.3737, 0.3592, 0.367, 0.3388, 0.3838, 0.3667, 0.3407, 0.3402, 0.3371,
                                  0.3217, 0.3382, 0.3158, 0.3209, 0.3325, 0.3208, 0.338, 0.3241, 0.3389, 0.3065,
                                  0.3095, 0.2814, 0.319, 0.3005, 0.3023, 0.2837, 0.273, 0.3158, 0.276, 0.3298,
                                  0.3235]},
             'lr 1e-2 + QK-norm': {'steps': [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 220, 240, 260, 280, 300,
                                             320, 340, 360, 380, 400, 420, 440, 460, 480, 500, 520, 540, 560, 580,
                                             600, 620, 640, 660, 680, 700, 720, 740, 760, 780, 800, 820, 840, 860,
                                             880, 900, 920, 940, 960, 980, 1000],
                                   'max_logit': [[3.33, 3.29, 3.48, 3.15], [3.67, 3.45, 3.53, 4.04],
                                                 [3.52, 3.41, 3.38, 3.65], [3.51, 3.55, 3.67, 3.59],
                                                 [3.25, 3.56, 3.82, 3.42], [3.0, 3.48, 3.25, 3.32],
                                                 [3.16, 3.39, 3.56, 3.25], [3.07, 3.67, 3.6, 3.31],
                                                 [3.11, 3.55, 3.23, 3.3], [2.81, 3.65, 3.23, 3.38],
                                                 [2.61, 3.51, 3.35, 3.68], [2.51, 3.59, 3.31, 3.57],
                                                 [2.51, 3.51, 3.28, 3.68], [2.86, 3.49, 3.77, 3.24],
                                                 [3.09, 3.55, 3.5, 3.54], [2.91, 3.58, 3.72, 3.48],
                                                 [2.6, 3.57, 3.53, 3.49], [2.57, 3.37, 3.47, 3.48],
                                                 [2.62, 3.56, 3.77, 3.32], [2.46, 3.82, 3.59, 3.73],
                                                 [2.59, 3.9, 3.63, 3.73], [2.61, 4.09, 3.64, 3.69],
                                                 [2.69, 3.98, 3.5, 3.51], [2.63, 3.82, 3.54, 3.88],
                                                 [2.61, 3.96, 3.38, 3.55], [2.63, 4.18, 3.6, 3.59],
                                                 [2.67, 4.07, 3.51, 3.63], [3.35, 4.09, 3.4, 4.15],
                                                 [3.24, 4.36, 3.37, 3.98], [3.01, 3.96, 3.52, 4.11],
                                                 [2.95, 4.2, 3.33, 4.34], [3.07, 4.0, 3.4, 4.18],
                                                 [2.87, 4.41, 3.25, 4.66], [2.76, 4.3, 3.32, 4.07],
                                                 [2.45, 4.21, 3.4, 4.2], [2.29, 4.27, 3.44, 4.18],
                                                 [2.6, 4.47, 3.59, 4.33], [2.09, 4.5, 3.54, 3.81],
                                                 [2.08, 4.7, 3.32, 3.86], [2.15, 4.71, 3.59, 4.06],
                                                 [2.19, 4.61, 3.51, 4.07], [2.47, 4.81, 3.69, 3.76],
                                                 [2.54, 4.83, 3.96, 4.07], [2.49, 4.85, 4.12, 4.16],
                                                 [2.43, 4.74, 3.35, 4.14], [2.48, 4.72, 3.23, 4.62],
                                                 [2.3, 4.61, 3.69, 4.46], [2.54, 4.66, 3.53, 4.31],
                                                 [2.63, 4.99, 3.57, 4.35], [2.34, 4.58, 3.51, 4.11],
                                                 [2.4, 4.83, 3.73, 3.99]],
                                   'loss': [None, 1.0796, 0.7105, 0.576, 0.4826, 0.4717, 0.4639, 0.4208, 0.4351,
                                            0.4209, 0.4333, 0.4044, 0.4089, 0.4114, 0.388, 0.3864, 0.3758, 0.3937,
                                            0.3595, 0.3536, 0.3505, 0.3687, 0.3424, 0.3605, 0.3218, 0.3473, 0.3496,
                                            0.3168, 0.3388, 0.3214, 0.3028, 0.3244, 0.3015, 0.2962, 0.3104, 0.2914,
                                            0.3214, 0.3065, 0.3128, 0.2848, 0.2903, 0.2677, 0.3095, 0.2932, 0.2904,
                                            0.2659, 0.2585, 0.2955, 0.2675, 0.3121, 0.2959]}}}
