"""Chapter 08: SD3's Table 1 in miniature, which timestep sampler trains rectified flow best?

Eight formulations train the same class-conditional DiT (chapter 06's ablation size, 1.3 M, with
learn_sigma=False) on the same cached one-object latent bank, for the same steps, batch and seeds:

    rf/uniform, rf/lognorm(0.00, 1.00), rf/lognorm(0.50, 0.60), rf/lognorm(1.00, 0.60),
    rf/mode(1.29), rf/cosmap     rectified flow: xt = (1 - t) x0 + t eps, target eps - x0, t drawn
                                 from `course.diffusion.timesteps`; the DiT gets t * 1000
    eps/linear                   DDPM's linear schedule, eps-prediction, uniform integer t
    v/cos                        the cosine schedule, v-prediction (Salimans & Ho 2022)

Each is sampled with CFG at 5 and 25 steps (Euler on SD3's sigma grid for the flows, DDIM with
"trailing" timesteps for the DDPM baselines, so that both start from pure noise) and scored by
Shapes-FID (with its real-vs-real floor) and class accuracy. As SD3 ranks its Table 1, the
formulations are ranked by non-dominated sorting of (FID, accuracy) within each (sampler setting,
seed), and the ranks averaged (`nondominated_ranks`, `average_ranks`).

`per_t_loss` measures which t are hard: a trained model's velocity error at each t on held-out
latents beside the error of the best linear predictor (data as a Gaussian with its own mean and
covariance), which is exact at t = 0 and t = 1 and worst in the middle.

Run it with `python -m course.recipes.timestep_ablation` (resumable: finished runs are skipped;
results in runs/sd3-recipe/results.json), then `python -m course.recipes.resolution_shift`; each
ends by copying the tables into the JSON that the notebook reads (`RECORD`). Shape letters: B batch, C = 4 latent channels, h = w latent side.
Ref: Esser et al. 2024, Sec. 3.1 and 5.1 (Table 1); Liu et al. 2022; Ho et al. 2020.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from course import paths
from course.diffusion import ddpm, flow, timesteps
from course.nn.dit import DiT, DiTConfig, drop_labels, get_preset
from course.recipes import dit_shapes as R
from course.recipes import flow_shapes

NET = get_preset("dit-shapes-ablation", num_classes=len(R.CLASSES), learn_sigma=False)  # D 128, depth 4, p = 2: 1.3 M
STEPS = 900  # ~0.2-0.26 s per step on one shared CPU thread: 3-4 min of training, ~40 s of evaluation per run
BATCH = 64
LR = 1e-3
WARMUP = 60
SEEDS = (0, 1)
EVAL_N = 288  # 16 images per class; the floor is measured at the same n
EVAL_STEPS = (5, 25)  # SD3's Table 1 sampler settings are 5 and 25 steps (with CFG)
GUIDANCE = 3.0
NUM_TRAIN_TIMESTEPS = int(flow_shapes.T_SCALE)  # the DiT's timestep input is t * 1000 for the flows (as SD3's)
RUN_DIR = paths.RUNS_DIR / "sd3-recipe"
RESULTS = RUN_DIR / "results.json"
RECORD = Path(__file__).with_name("data") / "sd3_recipe.json"  # the committed tables the notebook reads
COMMAND = ("OMP_NUM_THREADS=1 python -m course.recipes.timestep_ablation all && "
           "OMP_NUM_THREADS=1 python -m course.recipes.resolution_shift")

DDPM_BASELINES = {
    "eps/linear": ddpm.Schedule(beta_schedule="linear", clip_sample=False, timestep_spacing="trailing"),
    "v/cos": ddpm.Schedule(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False,
                           timestep_spacing="trailing"),
}
RF_SAMPLERS = ("uniform", "lognorm(0.00, 1.00)", "lognorm(0.50, 0.60)", "lognorm(1.00, 0.60)", "mode(1.29)", "cosmap")
# run order: the formulations SD3's Table 1 and issue 14 compare first (a second seed of these matters most)
FORMULATIONS = ("rf/uniform", "rf/lognorm(0.00, 1.00)", "eps/linear", "v/cos", "rf/mode(1.29)", "rf/cosmap",
                "rf/lognorm(0.50, 0.60)", "rf/lognorm(1.00, 0.60)")
# Esser et al. 2024, Table 1: average rank over their settings (lower is better), as issue 14 quotes it; the two
# other logit-normal rows are not quoted there and are left out rather than recalled
SD3_TABLE1 = {"rf/lognorm(0.00, 1.00)": 1.54, "rf/mode(1.29)": 2.75, "eps/linear": 2.88, "rf/cosmap": 4.13,
              "rf/uniform": 5.67, "v/cos": 9.17}


def is_flow(formulation: str) -> bool:
    if formulation not in FORMULATIONS:
        raise ValueError(f"unknown formulation {formulation!r}; choose one of {FORMULATIONS}")
    return formulation.startswith("rf/")


# ----------------------------------------------------------------------------- the losses
def make_loss(formulation: str, class_dropout: float = R.CLASS_DROPOUT):
    """(model, (z0, y), generator) -> loss, for one formulation; labels dropped for CFG as chapter 06."""
    if is_flow(formulation):  # chapter 07's CFM loss on the OT path, with t from this formulation's sampler
        return flow_shapes.make_flow_loss("ot", timesteps.parse(formulation[3:]), class_dropout)

    schedule = DDPM_BASELINES[formulation]

    def ddpm_loss(model: DiT, batch, generator: torch.Generator) -> torch.Tensor:
        z0, y = batch
        t = torch.randint(0, schedule.num_train_timesteps, (len(z0),), generator=generator).to(z0.device)
        eps = torch.randn(z0.shape, generator=generator).to(z0.device)
        y = drop_labels(y, class_dropout, model.config.num_classes, generator)
        fn = lambda xt, tt: model(xt, tt, y)  # noqa: E731
        if schedule.prediction_type == "epsilon":
            return ddpm.eps_loss(fn, z0, t, eps, schedule.alpha_bar)
        return ddpm.v_loss(fn, z0, t, eps, schedule.alpha_bar)
    return ddpm_loss


def train(formulation: str, steps: int, run_dir: Path | None, *, seed: int = 0, bank=None, config: DiTConfig = NET,
          batch_size: int = BATCH, lr: float = LR, init: DiT | None = None, progress: bool = False):
    """Train one formulation (resumable in run_dir); `init` starts from another model's weights (a fine-tune)."""
    from course.train import TrainConfig, fit

    torch.manual_seed(seed)
    model = DiT(config)
    if init is not None:
        missing = model.load_state_dict(init.state_dict(), strict=False)
        if missing.unexpected_keys or [k for k in missing.missing_keys if k != "pos_embed"]:
            raise ValueError(f"cannot start from that model: {missing}")
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(WARMUP, steps), schedule="constant",
                      ema_decay=0.999, checkpoint_every=250, log_every=50, seed=seed)
    return fit(model, make_loss(formulation), R.make_batch_fn(*bank), cfg, run_dir, progress=progress)


# ----------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample_latents(model: DiT, formulation: str, labels: torch.Tensor, *, steps: int, guidance: float = GUIDANCE,
                   shift: float = 1.0, seed: int = 0, batch_size: int = 360) -> torch.Tensor:
    """z0 (B, 4, h, w) with CFG: Euler on `flow.flow_sigmas(steps, shift)` for rf, DDIM (trailing) otherwise."""
    if is_flow(formulation):  # chapter 07's sampler: Euler on diffusers' flow grid, CFG on the velocity
        return flow_shapes.sample_flow_latents(model, labels, steps=steps, guidance=guidance, shift=shift, seed=seed,
                                               batch_size=batch_size)
    if shift != 1.0:
        raise ValueError("the shift applies to the flow formulations only")
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    out = []
    for i in range(0, len(labels), batch_size):
        y = labels[i : i + batch_size]
        x_T = torch.randn(len(y), cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
        fn = R.guided_model_fn(model, y, guidance, learned_sigma=False)  # (x, timestep) -> guided eps or v
        out.append(ddpm.sample(fn, None, DDPM_BASELINES[formulation], steps, method="ddim", x_T=x_T))
    z0 = torch.cat(out)
    if not torch.isfinite(z0).all():
        raise FloatingPointError(f"{formulation}: the sampler produced non-finite latents")
    return z0


def evaluate(model: DiT, formulation: str, codec, n: int = EVAL_N, steps_list=EVAL_STEPS, **sampler) -> dict:
    """{f"{steps}": {"fid", "fid_floor", "class_accuracy", "n"}} at each number of sampling steps."""
    from course.recipes.vae_shapes import decode_latents

    labels = R.balanced_labels(n)
    return {str(s): R.image_metrics(decode_latents(codec, sample_latents(model, formulation, labels, steps=s, **sampler)),
                                    labels) for s in steps_list}


# ----------------------------------------------------------------------------- which t are hard?
PER_T = tuple(round(x, 3) for x in np.linspace(0.02, 0.98, 25).tolist())


def gaussian_velocity_mse(z0: torch.Tensor, t_values=PER_T) -> list[float]:
    """The velocity MSE (per element) of the best *linear* predictor of u = eps - x0 from xt, at each t.

    Data as a Gaussian with the bank's mean m and covariance S (D = C h w dims): xt = (1 - t) x0 + t eps,
    Cov(u, xt) = t I - (1 - t) S, Cov(xt) = (1 - t)^2 S + t^2 I, Cov(u) = I + S, and the error of
    E_lin[u | xt] is tr(Cov(u) - Cov(u, xt) Cov(xt)^{-1} Cov(xt, u)) / D. At t -> 0 it tends to 1 (the
    noise is unknowable), at t -> 1 to tr(S) / D (the data is): the ends are easy in the sense that a
    linear map is optimal there; what a network adds is in the middle.
    """
    x = z0.flatten(1).double()  # (N, D)
    S = torch.cov(x.T)  # (D, D)
    D = S.shape[0]
    eye = torch.eye(D, dtype=torch.float64)
    out = []
    for t in t_values:
        c_ux = t * eye - (1 - t) * S
        c_xx = (1 - t) ** 2 * S + t**2 * eye
        out.append(float(torch.trace(eye + S - c_ux @ torch.linalg.solve(c_xx, c_ux.T)) / D))
    return out


@torch.no_grad()
def per_t_loss(model: DiT, formulation: str, val, t_values=PER_T, n: int = 512, seed: int = 0) -> list[float]:
    """The model's velocity MSE at each t on held-out latents (fixed noise): mean ||v_hat - (eps - x0)||^2.

    Every formulation is scored on the same target, rectified flow's u = eps - x0. A DDPM model is
    read at its timestep k of the nearest SNR (xt_k = sqrt(ab_k) x0 + sqrt(1 - ab_k) eps, the same
    x0 and eps), its output converted to (x0_hat, eps_hat), and v_hat = eps_hat - x0_hat.
    """
    labels, z0 = val[0][:n], val[1][:n]
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in t_values:
        eps = torch.randn(z0.shape, generator=g)
        if is_flow(formulation):
            xt, u = flow.rf_path(z0, eps, t)
            v = model(xt, torch.full((len(z0),), t * NUM_TRAIN_TIMESTEPS), labels)
        else:
            schedule = DDPM_BASELINES[formulation]
            lam = timesteps.log_snr(torch.tensor(t, dtype=torch.float64))
            k = int(torch.argmin((schedule.snr.double().log() - lam).abs()))  # the DDPM step of the nearest log-SNR
            xt = ddpm.q_sample(z0, torch.full((len(z0),), k), eps, schedule.alpha_bar)
            x0_hat, eps_hat = ddpm.predict_x0_eps(model(xt, torch.full((len(z0),), k), labels), xt,
                                                  schedule.alpha_bar[k], schedule.prediction_type)
            v, u = eps_hat - x0_hat, eps - z0
        out.append(float(((v - u) ** 2).mean()))
    return out


# ----------------------------------------------------------------------------- ranking as SD3 does
def nondominated_ranks(points: dict[str, tuple[float, float]]) -> dict[str, int]:
    """Non-dominated sorting (Deb et al. 2002) of (FID, accuracy): rank 1 is the Pareto front, then peel.

    A formulation dominates another when its FID is no higher and its accuracy no lower, one of them
    strictly. SD3 ranks each (setting) this way on its metrics and averages the ranks (Sec. 5.1).
    """
    left, ranks, r = dict(points), {}, 1
    while left:
        front = [k for k, (f, a) in left.items()
                 if not any((f2 <= f and a2 >= a) and (f2 < f or a2 > a) for k2, (f2, a2) in left.items() if k2 != k)]
        for k in front:
            ranks[k] = r
            del left[k]
        r += 1
    return ranks


def average_ranks(results: dict, seeds=SEEDS, steps_list=EVAL_STEPS) -> dict[str, float]:
    """Each formulation's rank averaged over the settings (sampling steps x seeds), best first."""
    ranks: dict[str, list[int]] = {f: [] for f in FORMULATIONS}
    for seed in seeds:
        for s in steps_list:
            points = {f: (r["eval"][str(s)]["fid"], r["eval"][str(s)]["class_accuracy"]) for f in FORMULATIONS
                      if (r := results.get(run_key(f, seed)))}
            for f, rank in nondominated_ranks(points).items():
                ranks[f].append(rank)
    avg = {f: round(float(np.mean(v)), 2) for f, v in ranks.items() if v}
    return dict(sorted(avg.items(), key=lambda kv: kv[1]))


def table(results: dict) -> dict[str, dict]:
    """Per formulation and sampler setting: FID and accuracy, mean and half-range over seeds."""
    out = {}
    for f in FORMULATIONS:
        runs = [results[run_key(f, s)] for s in SEEDS if run_key(f, s) in results]
        if not runs:
            continue
        row = {"seeds": len(runs), "train_s": round(float(np.mean([r["train_s"] for r in runs])))}
        for s in EVAL_STEPS:
            fids = [r["eval"][str(s)]["fid"] for r in runs]
            accs = [r["eval"][str(s)]["class_accuracy"] for r in runs]
            row[str(s)] = {"fid": round(float(np.mean(fids)), 2), "fid_spread": round((max(fids) - min(fids)) / 2, 2),
                           "class_accuracy": round(float(np.mean(accs)), 3),
                           "accuracy_spread": round((max(accs) - min(accs)) / 2, 3),
                           "fid_floor": runs[0]["eval"][str(s)]["fid_floor"]}
        losses = [r["per_t"] for r in runs]
        row["val_loss"] = round(float(np.mean(losses)), 4)  # the velocity MSE averaged over uniform t
        out[f] = row
    return out


# ----------------------------------------------------------------------------- the runner
def run_key(formulation: str, seed: int) -> str:
    return f"{formulation}@s{seed}"


def _dir_name(formulation: str, seed: int) -> str:
    return formulation.replace("/", "-").replace("(", "").replace(")", "").replace(", ", "_") + f"-s{seed}"


def load_results(path: Path = RESULTS) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_results(results: dict, path: Path = RESULTS) -> None:
    """Merge into the file, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = load_results(path) | results
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
    os.replace(tmp, path)
    results.update(merged)


def banks():
    """(codec, training bank, held-out bank): chapter 06's cached one-object latents."""
    codec, _ = R._frozen_codec()
    bank = R.class_bank(codec, cache=RUN_DIR / "class_bank.safetensors")
    val = R.class_bank(codec, n=2048, seed=707, cache=RUN_DIR / "val_bank.safetensors")  # held out (chapter 06's VAL_SEED)
    return codec, bank, val


EARLY = 300  # rf/uniform seed 0 is also probed here, for the per-t loss early in training


def run_all(results: dict, seeds=SEEDS, formulations=FORMULATIONS, steps: int = STEPS) -> None:
    codec, bank, val = banks()
    for seed in seeds:
        for f in formulations:
            key = run_key(f, seed)
            if key in results:
                continue
            t0 = time.perf_counter()
            run_dir = RUN_DIR / _dir_name(f, seed)
            if f == "rf/uniform" and seed == 0 and "early_per_t" not in results:
                early = train(f, EARLY, run_dir, seed=seed, bank=bank)
                results["early_per_t"] = {"steps": EARLY, "loss": per_t_loss(early.ema, f, val)}
                save_results(results)
            result = train(f, steps, run_dir, seed=seed, bank=bank)
            if result.interrupted:
                raise SystemExit(f"interrupted in {key} at step {result.step}; run `{COMMAND}` again to resume")
            model = result.ema.eval()
            results[key] = {"eval": evaluate(model, f, codec), "per_t": per_t_loss(model, f, val), "steps": steps,
                            "seed": seed, "train_s": round(result.wall_time_s), "run_s": round(time.perf_counter() - t0)}
            save_results(results)
            print(key, json.dumps(results[key]["eval"]), results[key]["train_s"], "s", flush=True)


def record(results: dict) -> dict:
    """The committed summary: tables, ranks, the per-t losses and the protocol with its command."""
    linear = gaussian_velocity_mse(banks()[2][1])
    per_t = {f: np.mean([results[run_key(f, s)]["per_t"] for s in SEEDS if run_key(f, s) in results], axis=0).round(4).tolist()
             for f in FORMULATIONS if any(run_key(f, s) in results for s in SEEDS)}
    complete = tuple(s for s in SEEDS if all(run_key(f, s) in results for f in FORMULATIONS))
    partial = {f: [s for s in SEEDS if run_key(f, s) in results] for f in FORMULATIONS}
    out = {"command": COMMAND, "table": table(results), "average_rank": average_ranks(results, seeds=complete),
           "ranked_seeds": list(complete), "seeds_run": partial,
           "average_rank_by_seed": {str(s): average_ranks(results, seeds=(s,)) for s in complete},
           "sd3_table1": SD3_TABLE1,
           "per_t": {"t": list(PER_T), "by_formulation": per_t, "gaussian_linear": [round(x, 4) for x in linear],
                     "early": results.get("early_per_t")},
           "protocol": {"net": dataclasses.asdict(NET), "steps": STEPS, "batch": BATCH, "lr": LR, "seeds": list(SEEDS),
                        "eval_n": EVAL_N, "eval_steps": list(EVAL_STEPS), "guidance": GUIDANCE,
                        "samplers": "Euler on flow_sigmas (shift 1) for rf; DDIM eta 0, trailing timesteps for DDPM"},
           "shift": results.get("shift")}
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(out, indent=1))
    return out


def restore_from_record(results: dict, record_path: Path = RECORD) -> list[str]:
    """Fill `results` with the single-seed runs that the committed record holds and `results` lacks.

    runs/ is not committed, so a fresh checkout has no results.json; the record keeps every finished
    run of a formulation that ran under one seed exactly (its table row is that run's numbers, its
    per-t curve that run's curve), so new seeds can be added without re-running the old ones.
    Returns the keys restored (each entry is marked "restored_from").
    """
    if not record_path.is_file():
        return []
    rec = json.loads(record_path.read_text())
    restored = []
    for f, seeds in rec.get("seeds_run", {}).items():
        row = rec["table"].get(f, {})
        if len(seeds) != 1 or row.get("seeds") != 1 or run_key(f, seeds[0]) in results:
            continue
        results[run_key(f, seeds[0])] = {
            "eval": {str(s): {k: row[str(s)][k] for k in ("fid", "class_accuracy", "fid_floor")} for s in EVAL_STEPS},
            "per_t": rec["per_t"]["by_formulation"][f], "steps": rec["protocol"]["steps"], "seed": seeds[0],
            "train_s": row["train_s"], "restored_from": record_path.name}
        restored.append(run_key(f, seeds[0]))
    for key, value in (("early_per_t", rec["per_t"].get("early")), ("shift", rec.get("shift"))):
        if value and key not in results:
            results[key] = value
            restored.append(key)
    return restored


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "all"
    if what not in ("ablation", "record", "all"):
        print("usage: python -m course.recipes.timestep_ablation [ablation [SEED ...]|record|all]\n"
              "(the resolution-shift experiment: python -m course.recipes.resolution_shift)")
        return 2
    results = load_results()
    restored = restore_from_record(results)
    if restored:
        save_results(results)
        print(f"restored from {RECORD.name} (runs/ is not committed): {', '.join(restored)}", flush=True)
    if what in ("ablation", "all"):
        seeds = tuple(int(s) for s in argv[1:]) or SEEDS
        run_all(results, seeds)
    if what in ("record", "all"):
        print(json.dumps(record(results)["average_rank"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
