"""Chapter 09's capstone: measuring the course's text-to-image models on the same held-out prompts.

- The measures, `style_metrics` (ShapesEval in the three prompt styles), `geneval_categories` and
  `concept_bleeding`, live in `course.recipes.style_eval`, below sd3_shapes, which uses them too;
  this module sits above both.

Commands (`python -m course.recipes.capstone ...`, one CPU thread each; results in
runs/sd3-shapes-capstone/, then copied by `record` into RECORD, the committed JSON the notebook reads):

    table [MODEL ...]   every text-to-image model at 5 / 10 / 20 / 50 steps in the three prompt styles (~45 min)
    bleeding [MODEL ...] concept bleeding of sd1-shapes and sdxl-shapes at their recommended settings
    t5drop              sd3-shapes with and without its MiniLM stream (SD3's T5-free mode)
    upsample            the prompt upsampler (DALL-E 3's rewriting) on the short prompts
    recaption           SD3's Table 4 in miniature: web captions only vs a 50/50 mix with the
                        recaptioner's, two smaller sd3-shapes (~45 min)
    variant NAME LABEL  measure the checkpoint in place for NAME as the rows LABEL (one of VARIANTS)
    restore [MODEL ...] put the committed RECORD back into runs/, without MODEL's rows (to re-measure only those)
    keep NAME LABEL     move NAME's measured rows in runs/ to LABEL (one of VARIANTS): before NAME is retrained
    record              copy what has been run into RECORD

Images are uint8 (B, H, W, 3).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from course import paths
from course.world import shapes

from course.recipes.style_eval import (  # noqa: F401: the capstone's measures, re-used by name here
    GENEVAL_CATEGORIES, GENEVAL_PUBLISHED, HELD_OUT_SEED, batched, bleeding_rates, concept_bleeding,
    generate_batched, geneval_categories, score_report, score_styles, style_metrics, two_object_colour_binding,
    two_object_prompts)


# ----------------------------------------------------------------------------- prompt upsampling (DALL-E 3's rewriting)
def upsample_prompt(prompt: str, seed: int = 0) -> str:
    """A short prompt expanded into a full canonical caption: what it leaves out (sizes, positions) is sampled.

    The miniature of DALL-E 3's prompt rewriting (Betker et al. 2023, Sec. 3.4 and App. C): the model
    is trained mostly on descriptive captions, so a short user prompt is first rewritten into one.
    What the prompt states is kept; `shapes.complete_scene` draws the rest (respecting a relation).
    """
    return shapes.caption(shapes.complete_scene(shapes.parse(prompt), seed))


@torch.no_grad()
def upsampler_eval(generate, n: int = 256, seed: int = HELD_OUT_SEED) -> dict[str, float]:
    """ShapesEval on the short prompts of n held-out scenes: images from the short prompt itself, and from its
    upsampled caption, both scored against the short prompt (what the person asked for).

    Returns:
        {"short_{one|two}_full_match", "upsampled_{one|two}_full_match", and the same for binding}.
    """
    from course.world import metrics

    short = metrics.style_prompts(shapes.sample_scenes(n, seed), "short")
    long = [upsample_prompt(p, i) for i, p in enumerate(short)]
    out = {}
    for name, prompts in (("short", short), ("upsampled", long)):
        by = metrics.shapes_eval(generate(prompts), short).by_objects()
        for k, group in ((1, "one"), (2, "two")):
            if k in by:
                out[f"{name}_{group}_full_match"] = round(by[k].full_match, 4)
                out[f"{name}_{group}_binding"] = round(by[k].binding, 4)
    return out


# ----------------------------------------------------------------------------- recaptioning (SD3 Table 4, DALL-E 3)
WEB_DROP = {"size": 0.6, "position": 0.6, "colour": 0.15, "second_object": 0.35}  # what alt text leaves out
WEB_WRONG = {"colour": 0.08, "shape": 0.05}  # and what it gets wrong


def web_caption(scene: shapes.Scene, rng: np.random.Generator) -> str:
    """A caption as alt text describes an image: attributes and objects left out at random, wrong words at times.

    Each object's size and position are left out with WEB_DROP's rates, its colour too (rarely); the
    second object of a two-object scene is left out entirely 35% of the time; a colour or a shape is
    replaced by a wrong one with WEB_WRONG's rates. The words stay the Shapes world's, so the text
    encoders read every one of them (a colourless "a circle" is the only form the grammar lacks).
    """
    objs = list(scene.objects)
    if len(objs) == 2 and rng.random() < WEB_DROP["second_object"]:
        objs = objs[:1]
    phrases = []
    for o in objs:
        colour = str(rng.choice([c for c in shapes.PALETTE if c != o.color])) if rng.random() < WEB_WRONG["colour"] else o.color
        shape = str(rng.choice([s for s in shapes.SHAPES if s != o.shape])) if rng.random() < WEB_WRONG["shape"] else o.shape
        words = ["a"]
        if rng.random() >= WEB_DROP["size"]:
            words.append(o.size)
        if rng.random() >= WEB_DROP["colour"]:
            words.append(colour)
        words.append(shape)
        if rng.random() >= WEB_DROP["position"]:
            words.append(f"in the {o.position}")
        phrases.append(" ".join(words))
    return " and ".join(phrases)


@torch.no_grad()
def classifier_captions(images: np.ndarray, classifier=None, batch_size: int = 256) -> list[str]:
    """Synthetic captions from the shipped `shapes-classifier` as the recaptioner, errors and all.

    The classifier predicts colour x shape presence (18), cell occupancy (9) and "two objects" (1).
    The caption names the k most likely colour-shape pairs (k = 2 when "two objects" > 0.5) and the
    k most likely cells, the more likely cell given to the more likely object: the classifier does
    not say which object sits where, so that pairing is one of its errors. It predicts no size.

    Args:
        images: uint8 (B, 64, 64, 3).

    Returns:
        B captions, e.g. "a red circle in the top left and a blue square in the center".

    Ref: Betker et al. 2023 (DALL-E 3), Sec. 2 (a trained captioner); Esser et al. 2024, Sec. 5.2.2 (CogVLM captions).
    """
    from course.world.classifiers import load_shapes_classifier

    classifier = classifier or load_shapes_classifier()
    pairs = [(c, s) for c in shapes.PALETTE for s in shapes.SHAPES]
    n_pairs = len(pairs)
    out = []
    for i in range(0, len(images), batch_size):
        x = shapes.to_tensor(images[i : i + batch_size]).to(next(classifier.parameters()).device)
        logits = classifier(x).cpu()  # (b, 28)
        for row in logits:
            k = 2 if row[-1] > 0 else 1
            objs = row[:n_pairs].topk(k).indices.tolist()
            cells = row[n_pairs : n_pairs + len(shapes.POSITIONS)].topk(k).indices.tolist()
            out.append(" and ".join(f"a {pairs[o][0]} {pairs[o][1]} in the {shapes.POSITIONS[c]}"
                                    for o, c in zip(objs, cells)))
    return out


RECAPTION_N = 8192  # scenes per experiment bank (half the shipped model's)
RECAPTION_STEPS = 3000  # the same steps for both models (1500 left both near 0.1 one-object full match: too early to compare)
RECAPTION_SMALL = dict(depth=3)  # a smaller sd3-shapes


def recaption_captions(mode: str, n: int = RECAPTION_N, seed: int = 4_321) -> list[str]:
    """One caption per scene of `sd3_shapes.build_bank(n=n, seed=seed)`: "web" (alt text only) or "mix"
    (each scene's caption synthetic with probability 0.5, from the recaptioner run on its render; SD3's 50/50)."""
    if mode not in ("web", "mix"):
        raise ValueError(f"mode must be 'web' or 'mix', got {mode!r}")
    scenes = shapes.sample_scenes(n, seed)
    rng = np.random.default_rng(seed)
    web = [web_caption(s, rng) for s in scenes]
    if mode == "web":
        return web
    synthetic = np.concatenate([np.array(classifier_captions(shapes.render_batch(scenes[i : i + 1024]), None), dtype=object)
                                for i in range(0, n, 1024)]).tolist()
    use = rng.random(n) < 0.5
    return [syn if u else w for syn, w, u in zip(synthetic, web, use)]


def recaption_experiment(run_root: str | Path = paths.RUNS_DIR / "sd3-shapes-recaption", steps: int = RECAPTION_STEPS,
                         n_eval: int = 256) -> dict[str, dict]:
    """SD3's Table 4 in miniature: two smaller sd3-shapes (depth 3), web captions only vs a 50/50 mix with the
    recaptioner's, the same steps; ShapesEval on canonical (full) prompts of the held-out scenes."""
    import dataclasses

    from course.recipes import sd3_shapes as S
    from course.train import TrainConfig, fit

    text, codec, _ = S._frozen_parts()
    out = {}
    for mode in ("web", "mix"):
        run_dir = Path(run_root) / mode
        bank = S.build_bank(text, codec, RECAPTION_N, seed=4_321, cache=run_dir / "bank.safetensors",
                            captions=recaption_captions(mode), caption_source=mode)
        torch.manual_seed(0)
        model = S.MMDiT(dataclasses.replace(S.SD3_SHAPES, **RECAPTION_SMALL))
        cfg = TrainConfig(steps=steps, batch_size=S.BATCH_SIZE, lr=S.LR, warmup_steps=min(200, steps // 10),
                          schedule="cosine", ema_decay=0.999, checkpoint_every=250, log_every=50)
        result = fit(model, S.sd3_loss, S.make_batch_fn(bank), cfg, run_dir, progress=False)
        pipe = S.SD3Shapes(result.ema.eval(), text, codec).pipeline()
        out[mode] = {"steps": result.step, "train_s": round(result.wall_time_s),
                     **score_styles(lambda p: generate_batched(pipe, p), n_eval)}
    return out


# ----------------------------------------------------------------------------- the capstone table
CAPSTONE_NFE = (5, 10, 20, 50)  # sampler steps per row (CFG runs two branches per step for every model alike)
CAPSTONE_N = 256  # held-out scenes per prompt style: FID needs >= 2 x 128 features
TEXT_MODELS = ("sd1-shapes", "sdxl-shapes", "sdxl-shapes+refiner", "sd3-shapes")
CLASS_MODELS = ("dit-shapes", "flow-shapes")  # class-conditional: "a {colour} {shape}" prompts of one-object scenes
RUN_DIR = paths.RUNS_DIR / "sd3-shapes-capstone"
RECORD = Path(__file__).with_name("data") / "capstone.json"  # the committed tables the notebook reads
# Variants measured in the table but not shipped: trained by the same command after a one-line recipe change,
# measured with `variant NAME LABEL` while their checkpoint was in place, then the shipped one restored.
# The first shipped sd1-shapes (commit 33a25b2) and sdxl-shapes (commit 48f8d48) are among them now: their rows
# were measured while they were shipped, and moved to these labels (`keep`) when their retrained ones shipped.
VARIANTS = {
    "sd1-shapes, paraphrases only": {
        "parameters": 3_168_324, "train_minutes": 57.0, "of": "sd1-shapes",
        "recipe": "course/recipes/sd1_shapes.py with SHORT_CAPTION_SHARE = 0 and SD1_SHAPES_STEPS = 9000 (the first "
                  "shipped sd1-shapes), then python -m course train sd1-shapes",
        "sha256": "55799c6b147168bfbb3dbac20f7b0197608975f32bb6cc60ac7b9fbd39073b0a"},
    "sd1-shapes, 25% short captions": {
        "parameters": 3_168_324, "train_minutes": 68.5, "of": "sd1-shapes",
        "recipe": "course/recipes/sd1_shapes.py with SHORT_CAPTION_SHARE = 0.25 and SD1_SHAPES_STEPS = 9000, then "
                  "python -m course train sd1-shapes",
        "sha256": "983929b550a357febcf9b0956674244cf7a571895f9838aaadedba738308f2a9"},
    "sdxl-shapes, paraphrases only": {
        "parameters": 5_508_804, "train_minutes": 65.1, "of": "sdxl-shapes",
        "recipe": "course/recipes/sdxl_shapes.py with SHORT_CAPTION_SHARE = 0 and STEPS = 5000 (the first shipped "
                  "sdxl-shapes), then python -m course train sdxl-shapes",
        "sha256": "2a276bfd7a4ecb9515ae0b8c195ed5cb4eb8a8e8dafeb03e92d1f775d3ffab68"},
    "sdxl-shapes+refiner, paraphrases only": {
        "parameters": 11_017_608, "train_minutes": 96.5, "of": "sdxl-shapes+refiner",
        "recipe": "the first shipped sdxl-shapes (the row above) refined by the shipped sdxl-shapes-refiner",
        "sha256": "2a276bfd7a4ecb9515ae0b8c195ed5cb4eb8a8e8dafeb03e92d1f775d3ffab68"}}


def _generators(name: str, steps: int):
    """prompts -> {row name: uint8 images}, at `steps` and the model's recommended guidance."""
    from course.pipelines import base

    if name.startswith("sdxl-shapes"):
        from course.recipes import sdxl_shapes

        pipe, refiner = base.load("sdxl-shapes"), base.load("sdxl-shapes-refiner")

        def both(prompts):
            plain, refined = batched(lambda p, seed: sdxl_shapes.refine(pipe, refiner, p, steps=steps, seed=seed,
                                                                           guidance=pipe.default_guidance), prompts)
            return {"sdxl-shapes": plain, "sdxl-shapes+refiner": refined}
        return both
    pipe = base.load(name)
    return lambda prompts: {name: batched(lambda p, seed: pipe.generate(p, steps=steps, seed=seed), prompts)}


def _shipped_parts(name: str) -> tuple[str, ...]:
    """The shipped checkpoints behind a row of the table: "sdxl-shapes+refiner" is two."""
    return ("sdxl-shapes", "sdxl-shapes-refiner") if name == "sdxl-shapes+refiner" else (name,)


def parameter_count(name: str) -> int:
    """Parameters of a shipped model's denoiser (the frozen text encoders and VAE, shared, not counted)."""
    from course.pipelines import base

    pipes = [base.load(n) for n in _shipped_parts(name)]
    denoisers = [next(getattr(p, a) for a in ("unet", "model") if hasattr(p, a)) for p in pipes]
    return sum(int(x.numel()) for d in denoisers for x in d.parameters())


def training_minutes(name: str) -> float:
    """Wall-clock minutes of the shipped training run(s), from the manifest (one thread of a shared 2-core CPU)."""
    from course import checkpoints

    return round(sum(checkpoints.manifest_entry(n)["wall_time_s"] for n in _shipped_parts(name)) / 60, 1)


@torch.no_grad()
def capstone_rows(name: str, steps: int, n: int = CAPSTONE_N) -> dict[str, dict]:
    """One (model, steps) cell of the table: ShapesEval by category in the three prompt styles, Shapes-FID on the
    canonical prompts' images, seconds per image. For the class models: the class prompts of n one-object scenes."""
    from course.world import metrics

    generate = _generators(name, steps)
    if name in CLASS_MODELS:
        scenes = [s for s in shapes.sample_scenes(8 * n, HELD_OUT_SEED) if len(s.objects) == 1][:n]
        styles = {"short": metrics.style_prompts(scenes, "short")}
    else:
        scenes = shapes.sample_scenes(n, HELD_OUT_SEED)
        styles = {style: metrics.style_prompts(scenes, style) for style in metrics.PROMPT_STYLES}
    rows: dict[str, dict] = {}
    for style, prompts in styles.items():
        t0 = time.perf_counter()
        images = generate(prompts)
        seconds = (time.perf_counter() - t0) / len(prompts)
        for row, imgs in images.items():
            rows.setdefault(row, {})[style] = score_report(imgs, prompts)
            if style == ("short" if name in CLASS_MODELS else "canonical"):
                reference = shapes.render_batch(scenes) if name in CLASS_MODELS else None
                rows[row]["fid"] = round(metrics.shapes_fid(imgs, reference), 2)
                rows[row]["s_per_image"] = round(seconds, 4)  # for sdxl: base and refiner together
    return rows


def fid_floors(n: int = CAPSTONE_N) -> dict[str, float]:
    """Real-vs-real Shapes-FID at n, for each reference of the table:

    - "all": two independent sets of n scenes (the text models' images are scored against fresh scenes);
    - "one_object": the class models' reference (renders of the n one-object held-out scenes) against
      other renders of the same class prompts, sizes and positions drawn anew (`shapes.complete_scene`).
    """
    from course.world import metrics

    scenes = [s for s in shapes.sample_scenes(8 * n, HELD_OUT_SEED) if len(s.objects) == 1][:n]
    again = [shapes.complete_scene(shapes.parse(p), 10_000 + i)
             for i, p in enumerate(metrics.style_prompts(scenes, "short"))]
    return {"all": round(metrics.shapes_fid_floor(n), 2),
            "one_object": round(metrics.shapes_fid(shapes.render_batch(again), shapes.render_batch(scenes)), 2)}


def run_table(models=TEXT_MODELS + CLASS_MODELS, nfe=CAPSTONE_NFE, n: int = CAPSTONE_N,
              path: Path = RUN_DIR / "table.json") -> dict:
    """Every (model, steps) cell, resumable: finished cells in `path` are skipped."""
    import json

    table = json.loads(path.read_text()) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in models:
        if name == "sdxl-shapes+refiner":
            continue  # measured with sdxl-shapes, from the same base latents
        for steps in nfe:
            if f"{name}@{steps}" in table:
                continue
            for row, cell in capstone_rows(name, steps, n).items():
                table[f"{row}@{steps}"] = cell
                print(row, steps, {k: cell[k] for k in ("fid", "s_per_image")},
                      {s: cell[s]["full_match"] for s in cell if isinstance(cell[s], dict)}, flush=True)
            path.write_text(json.dumps(table, indent=1, sort_keys=True))
    return table


def measure_variant(name: str, label: str, nfe=CAPSTONE_NFE, n: int = CAPSTONE_N) -> None:
    """Measure the checkpoint now in place for `name` as the table's `label` rows (one of VARIANTS), with its
    concept bleeding; the shipped model's own rows are left as they are."""
    import json

    from course.pipelines import base

    if label not in VARIANTS:
        raise KeyError(f"{label!r} is not in capstone.VARIANTS ({', '.join(VARIANTS)}): add its facts there first")
    path = RUN_DIR / "table.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    for steps in nfe:
        if f"{label}@{steps}" not in table:
            table[f"{label}@{steps}"] = capstone_rows(name, steps, n)[name]
            path.write_text(json.dumps(table, indent=1, sort_keys=True))
    file = RUN_DIR / "bleeding.json"
    res = json.loads(file.read_text()) if file.is_file() else {}
    pipe = base.load(name)
    res[label] = bleeding_rates(lambda p: generate_batched(pipe, p))
    res[label]["settings"] = {"steps": pipe.default_steps, "guidance": pipe.default_guidance}
    file.write_text(json.dumps(res, indent=1))


def restore(drop: tuple[str, ...] = ()) -> None:
    """Put the committed record's finished parts back into RUN_DIR (runs/ is not committed), leaving out the
    rows of the models in `drop`, so that `table MODEL` and `bleeding MODEL` re-measure only those and
    `record` keeps the rest. Files already in RUN_DIR are never overwritten."""
    import json

    saved = json.loads(RECORD.read_text())
    parts = {RUN_DIR / "table.json": {k: v for k, v in saved["table"].items() if k.split("@")[0] not in drop},
             RUN_DIR / "bleeding.json": {k: v for k, v in saved.get("bleeding", {}).items() if k not in drop},
             RUN_DIR / "t5drop.json": saved.get("t5drop"), RUN_DIR / "upsample.json": saved.get("upsample"),
             paths.RUNS_DIR / "sd3-shapes-recaption" / "result.json": saved.get("recaption")}
    for file, value in parts.items():
        if value is not None and not file.exists():
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(json.dumps(value, indent=1, sort_keys=True))


def keep(name: str, label: str) -> None:
    """Move `name`'s rows (table and bleeding) in RUN_DIR to the variant `label`, so that a retrained `name`
    is measured afresh by `table NAME` while its predecessor's numbers stay in the record under `label`.

    Raises:
        KeyError: `label` is not a VARIANTS entry of `name` ("of").
        ValueError: RUN_DIR holds no rows of `name`, or already holds rows of `label`.
    """
    import json

    if VARIANTS.get(label, {}).get("of") != name:
        raise KeyError(f"{label!r} is not a capstone.VARIANTS entry of {name!r}: add its facts there first")
    path, file = RUN_DIR / "table.json", RUN_DIR / "bleeding.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    bleeding = json.loads(file.read_text()) if file.is_file() else {}
    rows = {key.split("@")[1]: key for key in table if key.split("@")[0] == name}
    if not rows:
        raise ValueError(f"no rows of {name!r} in {path}: run `capstone restore` first")
    if any(key.split("@")[0] == label for key in table) or label in bleeding:
        raise ValueError(f"{path.parent} already holds rows of {label!r}: nothing moved")
    table |= {f"{label}@{steps}": table.pop(key) for steps, key in rows.items()}
    path.write_text(json.dumps(table, indent=1, sort_keys=True))
    if name in bleeding:
        bleeding[label] = bleeding.pop(name)
        file.write_text(json.dumps(bleeding, indent=1))


def record(table: dict | None = None) -> dict:
    """Write the committed record (RECORD): the table, the floors, model facts, the experiments' results."""
    import json

    table = table if table is not None else json.loads((RUN_DIR / "table.json").read_text())
    out = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    models = sorted({key.split("@")[0] for key in table})
    out |= {"table": table, "nfe": list(CAPSTONE_NFE), "n": CAPSTONE_N, "held_out_seed": HELD_OUT_SEED,
            "fid_floor": fid_floors(),
            "models": {m: VARIANTS[m] if m in VARIANTS else {"parameters": parameter_count(m),
                                                              "train_minutes": training_minutes(m)} for m in models},
            "geneval_published": GENEVAL_PUBLISHED,
            "command": "OMP_NUM_THREADS=1 python -m course.recipes.capstone table  (then t5drop, upsample, recaption)"}
    for name, file in (("t5drop", RUN_DIR / "t5drop.json"), ("upsample", RUN_DIR / "upsample.json"),
                       ("bleeding", RUN_DIR / "bleeding.json"),
                       ("recaption", paths.RUNS_DIR / "sd3-shapes-recaption" / "result.json")):
        if file.is_file():
            out[name] = json.loads(file.read_text())
        else:  # not (yet) run here: never keep an earlier record's numbers for it
            out.pop(name, None)
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(out, indent=1, sort_keys=True))
    return out


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:2] == ["bleeding"]:  # concept bleeding of the shipped text-to-image models, at their settings
        from course.pipelines import base

        out_path = RUN_DIR / "bleeding.json"
        out_path.parent.mkdir(parents=True, exist_ok=True)
        res = json.loads(out_path.read_text()) if out_path.exists() else {}
        for name in sys.argv[2:] or ["sd1-shapes", "sdxl-shapes"]:
            if name not in res:
                pipe = base.load(name)
                t0 = time.perf_counter()
                res[name] = bleeding_rates(lambda p: generate_batched(pipe, p))
                res[name]["settings"] = {"steps": pipe.default_steps, "guidance": pipe.default_guidance,
                                         "seconds": round(time.perf_counter() - t0)}
                out_path.write_text(json.dumps(res, indent=1))
                print(name, res[name], flush=True)
    elif sys.argv[1:2] == ["t5drop"]:  # SD3's T5-free mode: sd3-shapes with and without the MiniLM stream
        from course.recipes import sd3_shapes

        model = sd3_shapes.load()
        res = {}
        for name, drop in (("all streams", ()), ("MiniLM dropped", ("minilm",))):
            pipe = model.pipeline(drop=drop)
            res[name] = score_styles(lambda p: generate_batched(pipe, p), 256)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        (RUN_DIR / "t5drop.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
    elif sys.argv[1:2] == ["upsample"]:  # the prompt upsampler on the short-prompt set
        from course.recipes import sd3_shapes

        pipe = sd3_shapes.load().pipeline()
        res = upsampler_eval(lambda p: generate_batched(pipe, p), 256)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        (RUN_DIR / "upsample.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
    elif sys.argv[1:2] == ["table"]:  # every text-to-image model at NFE 5 / 10 / 20 / 50, then the record
        run_table(tuple(sys.argv[2:]) or TEXT_MODELS + CLASS_MODELS)
        record()
    elif sys.argv[1:2] == ["variant"] and len(sys.argv) == 4:  # variant NAME LABEL
        measure_variant(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["record"]:
        record()
    elif sys.argv[1:2] == ["restore"]:  # restore [MODEL ...]: the record's parts, without MODEL's rows
        restore(tuple(sys.argv[2:]))
    elif sys.argv[1:2] == ["keep"] and len(sys.argv) == 4:  # keep NAME LABEL
        keep(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["recaption"]:
        result = recaption_experiment()
        (paths.RUNS_DIR / "sd3-shapes-recaption" / "result.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
    else:
        print("usage: python -m course.recipes.capstone table [MODEL ...] | bleeding [MODEL ...] | t5drop | upsample | "
              "recaption | variant NAME LABEL | restore [MODEL ...] | keep NAME LABEL | record")
