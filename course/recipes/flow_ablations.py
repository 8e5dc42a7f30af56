"""Chapter 07's measurements on Shapes latents and on the 2-D toys, recorded in flow-shapes' manifest entry.

- `nfe_table`: flow-shapes with Euler at 1 ... 32 steps against dit-shapes (the same network,
  data and steps, trained as DDPM) with DDIM at the same steps and at 50 and 250: the few-step
  claim behind SD3. Both with CFG at w = 3 (two network passes per step for both). Euler runs on a
  uniform grid; the rows "rf_diffusers_grid" (flow-shapes' first evaluation, recorded once) used
  diffusers' FlowMatchEulerDiscreteScheduler grid, whose last step only goes from 1/1000 to 0.
- `ot_vs_vp`: the same network, data and steps trained on the VP path (Lipman et al.'s FM-VP),
  sampled with the same Euler grid (Lipman et al. 2022, Table 2: FM-OT beats FM-VP at fewer NFE).
- `reflow_table`: flow-shapes against flow-shapes-reflow at 1, 2, 4 and 8 steps, and the
  straightness of both (Liu et al. 2022, Eq. 3) on the same noise.
- `toy_table`: the 2-D version of all three, on moons and checkerboard.

Every FID row has its real-vs-real floor at the same n. The VP model is not shipped (only
tabulated); `python -m course.recipes.flow_ablations vp` trains it in `runs/flow-ablations/vp`.
All tables: `python -m course.recipes.flow_ablations all` (after both flow models are shipped).
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from course import paths
from course.diffusion import flow
from course.recipes import dit_shapes, flow_shapes

RESULTS = paths.RUNS_DIR / "flow-ablations" / "results.json"
COMMAND = "python -m course.recipes.flow_ablations all"
VP_RUN = paths.RUNS_DIR / "flow-ablations" / "vp"
NFE_STEPS = flow_shapes.NFE_STEPS  # 1, 2, 4, 8, 16, 32
DDIM_EXTRA = (50, 250)
GUIDANCE = 3.0  # both families' recommended guidance
EVAL_N = 512
STRAIGHT_N, STRAIGHT_STEPS = 256, 64
TOYS = ("moons", "checkerboard")
# Liu et al. 2022 (CIFAR-10, 1-step FID): 1-rectified flow 378, after one reflow 12.2 (Table 1)
PAPER_REFLOW = {"1-RF 1 step": 378.0, "2-RF 1 step": 12.21}
# Lipman et al. 2022 (ImageNet 64x64, Table 1): FID and NFE of the adaptive solver
PAPER_OT_VP = {"FM-OT": {"fid": 14.45, "nfe": 138}, "FM-VP": {"fid": 16.88, "nfe": 187}}


def _load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def _save(results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    merged = _load() | results
    tmp = RESULTS.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, indent=1))
    tmp.replace(RESULTS)


def _row(key: str, results: dict, fn) -> dict:
    """Compute a row once; a rerun reads it back (the runner is resumable row by row)."""
    if key not in results:
        t0 = time.perf_counter()
        results[key] = fn() | {"seconds": round(time.perf_counter() - t0, 1)}
        _save({key: results[key]})
        print(key, results[key], flush=True)
    return results[key]


def _shipped(name: str):
    from course.pipelines.base import load_model

    return load_model(name)[0]


def train_vp(steps: int = flow_shapes.STEPS):
    """The VP-path twin of flow-shapes (same network, data, steps, seed), trained in VP_RUN."""
    result, _ = flow_shapes.train_flow(flow_shapes.FLOW_SHAPES, steps, VP_RUN, path="vp")
    return (result.ema if result.ema is not None else result.model).eval(), result


def _from_manifest(name: str, steps) -> dict:
    """The rows a shipped model's evaluation already measured (same sampler, n and floor): not sampled twice."""
    from course import checkpoints

    m = checkpoints.manifest_entry(name)["metrics"]
    return {s: {"fid": m[f"euler{s}_fid"], "class_accuracy": m[f"euler{s}_class_accuracy"], "fid_floor": m["fid_floor"],
                "n": m["n"], "source": f"{name}'s manifest metrics"} for s in steps if f"euler{s}_fid" in m}


def nfe_table(results: dict, codec) -> None:
    rows = _from_manifest("flow-shapes", NFE_STEPS) if flow_shapes.GUIDANCE == GUIDANCE else {}
    fm = None if len(rows) == len(NFE_STEPS) else _shipped("flow-shapes")
    for s in NFE_STEPS:
        _row(f"rf_euler_{s}", results, lambda: rows[s] if s in rows else flow_shapes.evaluate_flow(
            fm, codec, EVAL_N, steps=s, guidance=GUIDANCE, grid=flow_shapes.GRID))
    ddim_rows(results, codec)


def ddim_rows(results: dict, codec) -> None:
    dit = _shipped("dit-shapes")
    for s in NFE_STEPS + DDIM_EXTRA:
        _row(f"dit_ddim_{s}", results, lambda: dit_shapes.evaluate_model(dit, codec, EVAL_N, steps=s, guidance=GUIDANCE,
                                                                         method="ddim"))


def ot_vs_vp(results: dict, codec) -> None:
    vp, _ = train_vp()
    for s in NFE_STEPS:
        _row(f"vp_euler_{s}", results, lambda: flow_shapes.evaluate_flow(vp, codec, EVAL_N, steps=s, guidance=GUIDANCE,
                                                                          grid=flow_shapes.GRID))
    labels = dit_shapes.balanced_labels(STRAIGHT_N)
    x_T = torch.randn(STRAIGHT_N, 4, 8, 8, generator=torch.Generator().manual_seed(77))
    for name, model in (("rf", _shipped("flow-shapes")), ("vp", vp)):
        _row(f"{name}_straightness", results, lambda: {"straightness": round(flow.straightness(
            flow_shapes.guided_velocity(model, labels, GUIDANCE), x_T, STRAIGHT_STEPS), 4)})


def reflow_table(results: dict, codec) -> None:
    rf2 = _shipped("flow-shapes-reflow")
    rows = _from_manifest("flow-shapes-reflow", (1, 2, 4, 8))
    for s in (1, 2, 4, 8):
        _row(f"reflow_euler_{s}", results, lambda: rows[s] if s in rows else flow_shapes.evaluate_flow(
            rf2, codec, EVAL_N, steps=s, guidance=1.0, grid=flow_shapes.GRID))
    labels = dit_shapes.balanced_labels(STRAIGHT_N)
    x_T = torch.randn(STRAIGHT_N, 4, 8, 8, generator=torch.Generator().manual_seed(77))
    _row("reflow_straightness", results, lambda: {"straightness": round(flow.straightness(
        flow_shapes.guided_velocity(rf2, labels, 1.0), x_T, STRAIGHT_STEPS), 4)})


def toy_table(results: dict) -> None:
    from course.recipes import flow_toys
    from course.world.toys import toy_2d

    for name in TOYS:
        points = toy_2d(name, 20_000)
        for path in ("ot", "vp"):
            def one():
                run = flow_toys.train_toy_flow(points, path)
                out = flow_toys.quality_table(run.model, name) | {"train_s": round(run.seconds, 1)}
                if path == "ot":
                    t0 = time.perf_counter()
                    rr, nfe = flow_toys.reflow_toy(run)
                    out["reflow"] = flow_toys.quality_table(rr.model, name) | {
                        "pair_nfe": nfe, "reflow_s": round(time.perf_counter() - t0, 1)}
                return out
            _row(f"toy_{name}_{path}", results, one)


# ----------------------------------------------------------------------------- tables
def _fid_rows(results: dict, prefix: str, steps) -> dict:
    return {s: results[f"{prefix}_{s}"] for s in steps if f"{prefix}_{s}" in results}


def summary(results: dict) -> dict:
    """The chapter's tables from the raw rows: steps -> (FID, class accuracy), with the floors."""
    def cells(rows):
        return {str(s): {"fid": r["fid"], "class_accuracy": r["class_accuracy"]} for s, r in rows.items()}

    out = {"rf_euler": cells(_fid_rows(results, "rf_euler", NFE_STEPS)),
           "rf_euler_diffusers_grid": cells(_fid_rows(results, "rf_diffusers_grid", NFE_STEPS)),
           "dit_ddim": cells(_fid_rows(results, "dit_ddim", NFE_STEPS + DDIM_EXTRA)),
           "vp_euler": cells(_fid_rows(results, "vp_euler", NFE_STEPS)),
           "reflow_euler": cells(_fid_rows(results, "reflow_euler", (1, 2, 4, 8))),
           "straightness": {k.replace("_straightness", ""): v["straightness"] for k, v in results.items()
                            if k.endswith("_straightness")},
           "toys": {k[4:]: v for k, v in results.items() if k.startswith("toy_")}}
    floors = {r["fid_floor"] for k, r in results.items() if isinstance(r, dict) and "fid_floor" in r}
    out["fid_floor"] = sorted(floors)
    out["protocol"] = (f"{EVAL_N} class-balanced images per row, Shapes-FID against real one-object images (floor: "
                       f"real vs real at the same n), class accuracy = ShapesEval full match on 'a {{colour}} "
                       f"{{shape}}'; CFG w = {GUIDANCE:g} on both families (two passes per step), none for the "
                       f"reflowed model (one pass); straightness on {STRAIGHT_N} trajectories of {STRAIGHT_STEPS} "
                       f"Euler steps")
    return out


def record_in_manifest(results: dict) -> dict:
    """Write the tables into flow-shapes' manifest entry (its weights and metrics unchanged)."""
    from course import checkpoints

    manifest = checkpoints.read_manifest()
    manifest["flow-shapes"]["experiments"] = {"command": COMMAND, "vp_command": "python -m course.recipes."
                                              "flow_ablations vp", **summary(results)}
    checkpoints._atomic_write_text(paths.MANIFEST_PATH, checkpoints._dump_json(manifest))
    return manifest["flow-shapes"]["experiments"]


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "all"
    choices = ("vp", "nfe", "ddim", "reflow", "toys", "record", "all")
    if what not in choices:
        print(f"usage: python -m course.recipes.flow_ablations [{'|'.join(choices)}]")
        return 2
    results = _load()
    codec, _ = dit_shapes._frozen_codec()
    if what in ("nfe", "all"):
        nfe_table(results, codec)
    if what == "ddim":  # dit-shapes' rows only (they need no flow model)
        ddim_rows(results, codec)
    if what in ("vp", "all"):
        ot_vs_vp(results, codec)
    if what in ("reflow", "all"):
        reflow_table(results, codec)
    if what in ("toys", "all"):
        toy_table(results)
    if what in ("record", "all"):
        print(json.dumps(record_in_manifest(results), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
