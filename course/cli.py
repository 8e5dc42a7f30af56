"""`python -m course COMMAND`: the course's command line.

    doctor                      check versions, device, data and every shipped checkpoint
    list                        the named models
    train NAME                  train a model (resumable; Ctrl-C saves), `--ship` to update data/checkpoints
    eval NAME                   the metrics of a shipped (or --checkpoint) model
    generate --model NAME ...   write PNG images from prompts (runs/generated/ unless --out)
    parity [COMPONENT ...]      the from-scratch components against diffusers / transformers
    bench                       speed and acceptance figures
    student-edition DIR         learner copies of the notebooks, solutions replaced by stubs
    fetch-data                  get Fashion-MNIST (chapter 01); `make setup` runs it

`accelerate launch -m course train NAME` runs the same training on several GPUs or machines
(accelerate's own configuration), and on CPUs as several processes with
`ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_machines 1 --num_processes 2
--mixed_precision no --dynamo_backend no -m course train NAME` (`--cpu --num_processes 2` alone
starts one process unless MPI is installed).
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

from course import paths, zoo

DEFAULT_OUT = paths.RUNS_DIR / "generated"  # git-ignored, like every run


# ----------------------------------------------------------------------------- argument types


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (0 and negatives are refused, never read as "the default")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def seed_int(text: str) -> int:
    """An argparse type: a seed in 0 ... 2^63 - 1."""
    from course.pipelines.base import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seeds are 0 ... 2^63 - 1 = {MAX_SEED}, got {value}")
    return value


def guidance_float(text: str) -> float:
    """An argparse type: a finite guidance scale in 1 ... MAX_GUIDANCE."""
    from course.pipelines.base import check_guidance

    try:
        return check_guidance(float(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def unit_float(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _device(choice: str | None):
    """The torch device to run on: `choice`, or `course.runtime.pick_device()`; refused if unusable here."""
    from course import doctor
    from course.runtime import pick_device

    problem, fix, device = doctor.device_problem(choice)
    if problem:
        raise ValueError(f"{problem}: {fix}")
    return device if device is not None else pick_device(choice)


# ----------------------------------------------------------------------------- commands


def cmd_list(args) -> int:
    from course import checkpoints

    manifest = checkpoints.read_manifest()
    rows = [(card.name, f"chapter {card.chapter}", "shipped" if card.name in manifest else "not shipped yet",
             card.summary) for card in zoo.MODELS.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
    return 0


def _short_run(args) -> str | None:
    """Why this training run is not a full, evaluated one (a reason to protect the shipped copy), or None."""
    reasons = ([f"--steps {args.steps} instead of the recipe's"] if args.steps is not None else []) + \
              (["--no-eval: its metrics would not be measured"] if args.no_eval else [])
    return "; ".join(reasons) or None


def cmd_train(args) -> int:
    import torch
    from accelerate import PartialState

    from course import checkpoints

    card = zoo.card(args.name)
    run_dir = Path(args.run_dir) if args.run_dir is not None else paths.RUNS_DIR / args.name
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--run-dir {run_dir} is a file, not a folder: pass a folder (it is created if needed)")
    short = _short_run(args)
    if args.ship and short and args.name in checkpoints.read_manifest() and not args.force:
        raise ValueError(f"refusing to replace the shipped {args.name} with this run ({short}): the chapters and "
                         f"the models trained on it read the shipped one. Add --force to replace it anyway (undo "
                         f"with `git checkout data/checkpoints`), or drop --ship to write the result to {run_dir}")
    torch.manual_seed(0)
    trained = zoo.resolve(card.train)(args.steps, run_dir, args.fresh, not args.no_progress)
    state = PartialState()
    if not state.is_main_process:
        return 0
    if state.num_processes > 1:
        print(f"data-parallel training on {state.num_processes} processes ({state.device.type})")
    if trained.interrupted:
        print(f"interrupted at step {trained.steps}; state saved in {run_dir}. Run the same command again to resume.")
        return 130
    command = " ".join(["python -m course train", args.name] + (["--steps", str(args.steps)] if args.steps is not None else []))
    dtype = getattr(torch, card.storage_dtype)
    with torch.no_grad():  # round to the storage dtype first, so that the metrics describe what is shipped
        for v in trained.model.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.to(dtype))
    try:
        metrics = {} if args.no_eval else zoo.resolve(card.evaluate)(trained.model, False)
    except KeyboardInterrupt:
        print(f"\nevaluation interrupted; the trained state is saved in {run_dir}. Run the same command again: it "
              "finds the training done and evaluates (or add --no-eval to skip the evaluation).", file=sys.stderr)
        return 130
    print(f"trained {args.name}: {trained.steps} steps in {trained.wall_time_s:.0f} s; metrics {metrics}")
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in trained.model.state_dict().items()}
    notes = trained.notes + (f" Weights stored as {card.storage_dtype} (the metrics are measured on them)."
                             if card.storage_dtype != "float32" else "")
    common = dict(config=trained.config, wall_time_s=round(trained.wall_time_s, 1), metrics=metrics, notes=notes.strip())
    if args.ship:
        entry = checkpoints.ship(args.name, tensors, command=command + " --ship", **common)
        print(f"shipped data/checkpoints/{entry['file'] if 'file' in entry else args.name} (sha256 "
              f"{entry['sha256'][:12]}...) and updated MANIFEST.json" + ("; undo with `git checkout data/checkpoints`"
                                                                          if short else ""))
    else:
        out = run_dir / f"{args.name}.safetensors"
        checkpoints.export(out, tensors, command=command, **common)
        print(f"wrote {out} (+ .json); use it with --checkpoint {out}, or rerun with --ship to update the course's copy")
    return 0


def cmd_eval(args) -> int:
    from course.pipelines import base

    from course import checkpoints

    if args.record and (args.checkpoint or args.quick):
        raise ValueError("--record writes the shipped model's full evaluation into the manifest: drop --checkpoint "
                         "and --quick")
    device = _device(args.device)
    model, entry = base.load_model(args.name, args.checkpoint)  # a shipped one is sha256-verified here
    metrics = zoo.resolve(zoo.card(args.name).evaluate)(model.to(device), args.quick)
    for key, value in metrics.items():
        print(f"{key:<40} {value}")
    if args.record:
        checkpoints.record_metrics(args.name, metrics, f"python -m course eval {args.name} --record")
        print(f"recorded these metrics for {args.name} in MANIFEST.json (its weights unchanged)")
    elif not args.checkpoint and not args.quick:
        print(f"(manifest says: {entry.get('metrics')})")
    return 0


def _check_out_dir(out: Path, names: list[str], overwrite: bool) -> None:
    """Refuse, before any image is computed, an output folder that cannot be written or would lose images."""
    import tempfile

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: choose a folder (it is created if needed)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(f"cannot write images into --out {out} ({err.strerror or err}): choose a folder you can "
                         "write to") from None
    taken = [n for n in names if (out / n).exists()]
    if taken and not overwrite:
        raise ValueError(f"{len(taken)} of the images exist already in {out} ({', '.join(taken[:3])}"
                         f"{', ...' if len(taken) > 3 else ''}): choose another --out, another --seed, or add --overwrite")


def cmd_generate(args) -> int:
    import inspect

    import numpy as np

    from course.pipelines import base

    zoo.card(args.model)  # an unknown name is refused before anything is written
    if args.unconditional and args.prompt:
        raise ValueError("--unconditional makes the unconditional image (the empty prompt): give it without --prompt")
    prompts = [""] if args.prompt is None else args.prompt
    last_seed = args.seed + args.num - 1
    if last_seed > base.MAX_SEED:
        raise ValueError(f"--seed {args.seed} with --num {args.num} runs past the largest seed 2^63 - 1: lower --seed")
    names = [f"{args.model}-p{i:02d}-s{args.seed + j}.png" for i in range(len(prompts)) for j in range(args.num)]
    out = Path(args.out)
    _check_out_dir(out, names, args.overwrite)
    device = _device(args.device)

    pipe = base.load(args.model, checkpoint=args.checkpoint, device=device)
    extra = {}
    params = inspect.signature(pipe.generate).parameters
    text_to_image = "negative_prompts" in params
    if text_to_image and any(p == "" for p in prompts) and not args.unconditional:
        raise ValueError(f"{args.model} is a text-to-image model and an empty prompt gives its unconditional image: "
                         "give --prompt TEXT, or --unconditional to ask for that image")
    if args.negative_prompt is not None:  # only text-to-image pipelines take negative prompts
        if not text_to_image:
            raise ValueError(f"{args.model} does not take negative prompts (it is not a text-to-image model)")
        extra["negative_prompts"] = [args.negative_prompt]
    if args.sampler is not None:
        if not text_to_image:
            raise ValueError(f"{args.model} has no --sampler choice (it is not a text-to-image model)")
        extra["sampler"] = args.sampler
    sdxl = {"original_size": args.original_size, "crop_top_left": args.crop, "target_size": args.target_size}
    sdxl = {k: tuple(v) for k, v in sdxl.items() if v is not None}
    takes_sdxl = "original_size" in inspect.signature(getattr(pipe, "conditioning", lambda: None)).parameters
    if (sdxl or args.refine) and not takes_sdxl:
        raise ValueError(f"{args.model} has no size/crop conditioning or refiner: --original-size, --crop, "
                         "--target-size and --refine are for SDXL models (e.g. --model sdxl-shapes)")
    if args.refine_strength is not None and not args.refine:
        raise ValueError("--refine-strength sets the refiner's strength: give it with --refine")
    if args.size is not None:
        if not text_to_image:
            raise ValueError(f"{args.model} generates at one fixed size; --size is for text-to-image models")
        extra["size"] = pipe._size(tuple(args.size))  # refused here, before any image, with the model's real multiple
    refiner = None
    if args.refine:
        from course.recipes import sdxl_shapes

        strength = sdxl_shapes.REFINE_STRENGTH if args.refine_strength is None else args.refine_strength
        steps = inspect.signature(sdxl_shapes.refine).parameters["steps"].default if args.steps is None else args.steps
        if int(steps * strength) < 1:
            raise ValueError(f"--refine with --steps {steps} and strength {strength:g} leaves the refiner no step "
                             f"(int(steps x strength) = 0): raise --steps to at least {math.ceil(1 / strength)}, "
                             "or --refine-strength")
        refiner = base.load("sdxl-shapes-refiner", device=device)
    images = []
    for prompt in prompts:  # one image per call, seed by seed: each file can be remade alone with --num 1
        for j in range(args.num):
            common = dict(seed=args.seed + j, **extra, **sdxl)
            for name in ("steps", "guidance"):  # not given: the pipeline's own default
                if getattr(args, name) is not None:
                    common[name] = getattr(args, name)
            if refiner is not None:
                _, image = sdxl_shapes.refine(pipe, refiner, [prompt], strength=strength, **common)
            else:
                image = pipe.generate([prompt], **common)
            images.append(image[0])
    for path in base.save_images(np.stack(images), out, names=names, overwrite=args.overwrite):
        print(path)
    print(f"(each file is remade alone by the same command with --prompt P --num 1 --seed S, as in its name "
          f"{args.model}-pNN-sS.png)")
    return 0


def cmd_parity(args) -> int:
    import contextlib
    import io
    import logging

    from course import parity

    names = args.components if args.components else sorted(parity.COMPONENTS)
    for name in names:  # unknown names are refused before anything runs
        if name not in parity.COMPONENTS:
            parity.compare(name)
    for logger in ("diffusers", "transformers"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    width = max(len(n) for n in names)
    print(f"{'component':<{width}}  {'max |course - reference|':>24}  result  (tolerance {args.tolerance:.0e})")
    failed = 0
    for name in names:
        noise = io.StringIO()  # library warnings and progress bars, kept out of the table
        try:
            with warnings.catch_warnings(), contextlib.redirect_stderr(noise), contextlib.redirect_stdout(noise):
                warnings.simplefilter("ignore")
                diff = parity.compare(name)
        except Exception as err:  # one broken comparison must not hide the others
            failed += 1
            print(f"{name:<{width}}  {'-':>24}  ERROR   {type(err).__name__}: {err}")
            continue
        ok = diff <= args.tolerance
        failed += not ok
        print(f"{name:<{width}}  {diff:>24.2e}  {'ok' if ok else 'FAIL'}")
    print(f"{len(names) - failed} of {len(names)} components within {args.tolerance:.0e}")
    return 1 if failed else 0


def cmd_bench(args) -> int:
    from course import bench

    bench.run(quick=args.quick)
    return 0


def cmd_doctor(args) -> int:
    from course import doctor

    return doctor.run()


def cmd_fetch_data(args) -> int:
    """Chapter 01's Fashion-MNIST: found, else downloaded (MD5-checked), else Debian's package (as root)."""
    import os
    import shutil
    import subprocess

    from course.world import fashion_mnist

    def have() -> bool:
        try:
            for split in fashion_mnist.SPLITS:
                fashion_mnist.load_fashion_mnist(split)  # downloads into the cache when online
            return True
        except FileNotFoundError:
            return False

    if have():
        print("Fashion-MNIST: ready")
        return 0
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        print("Fashion-MNIST: offline; installing Debian's package dataset-fashion-mnist")
        subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if have():
            print("Fashion-MNIST: ready")
            return 0
    try:
        fashion_mnist.load_fashion_mnist("test")
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
    return 1


def cmd_student_edition(args) -> int:
    from course import student

    for path in student.make_student_edition(paths.NOTEBOOK_DIR, Path(args.dir), force=args.force):
        print(path)
    return 0


# ----------------------------------------------------------------------------- the parser


class _Help(argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default (where it has one its help does not state) and keeps line breaks."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        shown = not (action.default is None or action.default is False or action.default == argparse.SUPPRESS)  # 0 is shown
        if shown and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description, formatter_class=_Help)

    command("doctor", "check the installation",
            "Check the Python version, every pinned package, the data-only wheels, the device (COURSE_DEVICE), "
            "Fashion-MNIST, the manifest and the sha256 of every shipped checkpoint, and that each model's frozen "
            "parts are those it was trained with. Prints the exact fix of each problem; exit status 1 if any."
            ).set_defaults(fn=cmd_doctor)
    command("list", "the named models", "The zoo's models: chapter, whether shipped, what each is.").set_defaults(fn=cmd_list)

    p = command("train", "train a named model",
                "Train a zoo model through course.train.fit: resumable (Ctrl-C or SIGTERM saves, the same command "
                "resumes, also with another --steps), then evaluated, then written to runs/NAME or, with --ship, "
                "to data/checkpoints and the manifest.")
    p.add_argument("name")
    p.add_argument("--steps", type=positive_int, default=None, help="override the recipe's number of steps (>= 1)")
    p.add_argument("--run-dir", default=None, help="where resumable state goes (default runs/NAME)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    p.add_argument("--ship", action="store_true", help="write data/checkpoints/NAME.safetensors and the manifest")
    p.add_argument("--force", action="store_true",
                   help="with --ship: replace a shipped checkpoint even by a short (--steps) or unevaluated run")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_train)

    p = command("eval", "evaluate a model", "The metrics of a shipped (or --checkpoint) model, as in the manifest.")
    p.add_argument("name")
    p.add_argument("--checkpoint", default=None, help="a .safetensors file instead of the shipped one")
    p.add_argument("--quick", action="store_true", help="a smaller evaluation")
    p.add_argument("--record", action="store_true", help="write the metrics into the shipped model's manifest entry "
                   "(weights unchanged): after a model its evaluation reads was retrained")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: CUDA, then MPS, then the CPU; "
                                                  "COURSE_DEVICE sets it too)")
    p.set_defaults(fn=cmd_eval)

    p = command("generate", "generate images as PNG files",
                "Images from prompts, one PNG per image named MODEL-pNN-sSEED.png (prompt index, seed): image j of "
                "a prompt uses seed --seed + j, so any one is remade alone with --num 1 --seed S. Text-to-image "
                "models warn about words they were not trained on and prompts longer than their context.")
    p.add_argument("--model", required=True, help="a generator from `python -m course list`")
    p.add_argument("--prompt", action="append", default=None, help="repeat for several prompts")
    p.add_argument("--unconditional", action="store_true",
                   help="text-to-image models: the unconditional image (the empty prompt), instead of --prompt")
    p.add_argument("--num", type=positive_int, default=1, help="images per prompt")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampler steps; default: the model's recommended number (its manifest config's sample_steps: "
                        "25 for sd1-shapes and sdxl-shapes, with or without --refine; 50 DDIM steps for ddpm-fashion)")
    p.add_argument("--guidance", type=guidance_float, default=None,
                   help="classifier-free guidance scale, 1 ... 100 (1 = none); default: the model's recommended scale "
                        "(its manifest config's guidance: 3 for sd1-shapes and sdxl-shapes, 1 for the unconditional "
                        "ddpm-fashion)")
    p.add_argument("--negative-prompt", default=None, help="what to steer away from (text-to-image models, guidance > 1)")
    p.add_argument("--sampler", choices=("ddim", "euler"), default=None,
                   help="text-to-image models: DDIM or Euler (default: the model's, DDIM)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="text-to-image models: height and width in pixels, each a multiple of the model's step (32 for "
                        "sd1-shapes, 16 for sdxl-shapes: the VAE's 8 x the U-Net's downsampling) and at most 4 x "
                        "the trained size (256 px); default the trained 64 x 64")
    p.add_argument("--original-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="SDXL models: the original size to pretend (default: the image size)")
    p.add_argument("--crop", type=int, nargs=2, metavar=("TOP", "LEFT"), default=None,
                   help="SDXL models: the crop corner to pretend (default 0 0: nothing cut off)")
    p.add_argument("--target-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="SDXL models: the target size condition (default: the image size)")
    p.add_argument("--refine", action="store_true", help="sdxl-shapes: pass the latents through sdxl-shapes-refiner")
    p.add_argument("--refine-strength", type=unit_float, default=None,
                   help="with --refine: the refiner's SDEdit strength, (0, 0.2] (default 0.2: the last 20%% of the steps)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the first image, 0 ... 2^63 - 1")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the PNG files (runs/ is git-ignored)")
    p.add_argument("--overwrite", action="store_true", help="replace images of the same name in --out")
    p.add_argument("--checkpoint", default=None, help="a .safetensors file instead of the shipped one")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: CUDA, then MPS, then the CPU; "
                                                  "COURSE_DEVICE sets it too)")
    p.set_defaults(fn=cmd_generate)

    p = command("parity", "compare with diffusers / transformers",
                "Each from-scratch component against its diffusers / transformers counterpart, built from the same "
                "config with the same random weights and inputs: one table of the largest differences, exit status 1 "
                "if any is above --tolerance.")
    p.add_argument("components", nargs="*", help="components to compare (default: all)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="the largest difference accepted")
    p.set_defaults(fn=cmd_parity)

    p = command("bench", "speed and acceptance figures",
                "Wall-clock speed of the Shapes world, ShapesEval's acceptance on real images, the Shapes-FID floor, "
                "pixel vs latent diffusion cost and the U-Net against diffusers': printed, never asserted.")
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    p.set_defaults(fn=cmd_bench)

    command("fetch-data", "get the data the chapters read (Fashion-MNIST)",
            "Make sure chapter 01's Fashion-MNIST is here: found ($FASHION_MNIST_DIR, Debian's package, the cache), "
            "else downloaded from the official server with its MD5 checksums, else (offline, as root on Debian) "
            "installed with apt-get install dataset-fashion-mnist. `make setup` runs it; exit status 1 with the ways "
            "to get it when none works.").set_defaults(fn=cmd_fetch_data)

    p = command("student-edition", "learner copies of the notebooks",
                "Copies of the notebooks with every solution replaced by a stub. A notebook in DIR that differs from "
                "what this command wrote there last (a learner's work) is never overwritten without --force.")
    p.add_argument("dir")
    p.add_argument("--force", action="store_true", help="overwrite edited notebooks, each kept first as NAME.ipynb.bak")
    p.set_defaults(fn=cmd_student_edition)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on the command line: one line on stderr, no source location."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return args.fn(args)
    except KeyError as err:  # unknown model / component: the message lists the known ones
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, FileExistsError, MemoryError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from course.checkpoints import CheckpointError

        if isinstance(err, CheckpointError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
    finally:
        warnings.showwarning = shown
