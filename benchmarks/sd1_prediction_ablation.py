"""Why `sd1-shapes` predicts v: the same U-Net, data and steps trained as eps- and as v-prediction.

Trains the sd1-shapes U-Net (preset "shapes-latent", frozen clip-shapes text states and
vae-shapes latents, 10% caption dropout, EMA, cosine lr) for `--steps` steps with each prediction
type, then scores 128 held-out prompts with ShapesEval (25 DDIM steps, guidance 3 and 5). Both
runs use one CPU thread each, so two can run side by side on a 2-core machine:

    python benchmarks/sd1_prediction_ablation.py --prediction epsilon --run-dir runs/ablation-eps &
    python benchmarks/sd1_prediction_ablation.py --prediction v_prediction --run-dir runs/ablation-v

Measured on the course's 2-core CPU (1500 steps each, ~14 min per run):
eps 0.10 / 0.00 full match on one- / two-object prompts at w = 3, v 0.35 / 0.00; the eps model
also drew many stray blobs (count correct 0.27 vs 0.63).

Why: both losses compare predictions of the same x0 but weight its error differently over time.
eps-prediction's weight is SNR(t) (Ho et al.'s simple loss in x0 terms), about 0.005 at the noisiest
steps of SD's schedule, where the layout and colours of the image are decided; v-prediction's is
SNR(t) + 1 (Salimans & Ho 2022, Sec. 4), at least 1 everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from course.nn.unet import UNet
from course.recipes import sd1_shapes
from course.train import TrainConfig, fit
from course.world import metrics, shapes


def run(prediction: str, steps: int, run_dir: Path, n_prompts: int = 128) -> dict:
    torch.set_num_threads(1)
    schedule = dataclasses.replace(sd1_shapes.SCHEDULE, prediction_type=prediction)
    text_encoder, codec, _ = sd1_shapes._frozen_parts()
    scenes, z0 = sd1_shapes.latent_bank(codec, cache=run_dir / "latent_bank.safetensors")
    torch.manual_seed(0)
    unet = UNet(sd1_shapes.SD1_SHAPES_UNET)
    config = TrainConfig(steps=steps, batch_size=sd1_shapes.BATCH_SIZE, lr=5e-4, warmup_steps=min(200, steps // 10),
                         schedule="cosine", ema_decay=0.999, checkpoint_every=500, log_every=100)
    start = time.perf_counter()
    result = fit(unet, lambda m, b, g: sd1_shapes.sd1_loss(m, b, g, schedule), sd1_shapes.make_batch_fn(scenes, z0, text_encoder),
                 config, run_dir, resume=True, progress=False)
    model = (result.ema if result.ema is not None else result.model).eval()
    pipe = sd1_shapes.SD1Shapes(model, text_encoder, codec, schedule).pipeline()
    prompts = [shapes.caption(s) for s in shapes.sample_scenes(n_prompts, sd1_shapes.HELD_OUT_SEED)]
    out = {"prediction": prediction, "steps": steps, "train_s": round(time.perf_counter() - start, 1)}
    for w in (3.0, 5.0):
        report = metrics.shapes_eval(pipe.generate(prompts, steps=sd1_shapes.EVAL_STEPS, guidance=w, seed=0), prompts)
        by = report.by_objects()
        out[f"w{w:g}"] = {"one_object": round(by[1].full_match, 3), "two_objects": round(by[2].full_match, 3),
                          **{k: v for k, v in report.as_dict().items() if k != "n"}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prediction", choices=("epsilon", "v_prediction"), required=True)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--run-dir", type=Path, required=True, help="resumable training state and the result")
    args = parser.parse_args()
    result = run(args.prediction, args.steps, args.run_dir)
    (args.run_dir / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
