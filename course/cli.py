"""`python -m course COMMAND`: the course's command line.

    doctor                      check versions, device, data and every shipped checkpoint
    list                        the named models
    train NAME                  train a model (resumable; Ctrl-C saves), `--ship` to update data/checkpoints
    eval NAME                   the metrics of a shipped (or --checkpoint) model
    generate --model NAME ...   write PNG images from prompts
    parity [COMPONENT ...]      the from-scratch components against diffusers / transformers
    bench                       speed and acceptance figures
    student-edition DIR         learner copies of the notebooks, solutions replaced by stubs

`accelerate launch -m course train NAME` runs the same training on several GPUs or machines
(accelerate's own configuration), and on CPUs as several processes with
`ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_machines 1 --num_processes 2
--mixed_precision no --dynamo_backend no -m course train NAME` (`--cpu --num_processes 2` alone
starts one process unless MPI is installed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from course import paths, zoo


def _load_model(name: str, checkpoint: str | None):
    """A zoo model's weights (hash-verified) rebuilt into its module, and its manifest entry."""
    from course import checkpoints

    card = zoo.card(name)
    tensors, entry = checkpoints.load_checkpoint(None if checkpoint else name, checkpoint)
    return zoo.resolve(card.load)(tensors, entry["config"]), entry


def cmd_list(args) -> int:
    from course import checkpoints

    manifest = checkpoints.read_manifest()
    for card in zoo.MODELS.values():
        shipped = "shipped" if card.name in manifest else "not shipped yet"
        print(f"{card.name:<20} chapter {card.chapter}  {shipped:<16} {card.summary}")
    return 0


def cmd_train(args) -> int:
    import torch
    from accelerate import PartialState

    from course import checkpoints

    card = zoo.card(args.name)
    torch.manual_seed(0)
    run_dir = Path(args.run_dir) if args.run_dir else paths.RUNS_DIR / args.name
    trained = zoo.resolve(card.train)(args.steps, run_dir, args.fresh, not args.no_progress)
    state = PartialState()
    if not state.is_main_process:
        return 0
    if state.num_processes > 1:
        print(f"data-parallel training on {state.num_processes} processes ({state.device.type})")
    if trained.interrupted:
        print(f"interrupted at step {trained.steps}; state saved in {run_dir}. Run the same command again to resume.")
        return 130
    command = " ".join(["python -m course train", args.name] + (["--steps", str(args.steps)] if args.steps else []))
    dtype = getattr(torch, card.storage_dtype)
    with torch.no_grad():  # round to the storage dtype first, so that the metrics describe what is shipped
        for v in trained.model.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.to(dtype))
    metrics = {} if args.no_eval else zoo.resolve(card.evaluate)(trained.model, False)
    print(f"trained {args.name}: {trained.steps} steps in {trained.wall_time_s:.0f} s; metrics {metrics}")
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in trained.model.state_dict().items()}
    notes = trained.notes + (f" Weights stored as {card.storage_dtype} (the metrics are measured on them)."
                             if card.storage_dtype != "float32" else "")
    common = dict(config=trained.config, wall_time_s=round(trained.wall_time_s, 1), metrics=metrics, notes=notes.strip())
    if args.ship:
        entry = checkpoints.ship(args.name, tensors, command=command + " --ship", **common)
        print(f"shipped data/checkpoints/{entry['file']} (sha256 {entry['sha256'][:12]}...) and updated MANIFEST.json")
    else:
        out = run_dir / f"{args.name}.safetensors"
        checkpoints.export(out, tensors, command=command, **common)
        print(f"wrote {out} (+ .json); use it with --checkpoint {out}, or rerun with --ship to update the course's copy")
    return 0


def cmd_eval(args) -> int:
    model, entry = _load_model(args.name, args.checkpoint)
    metrics = zoo.resolve(zoo.card(args.name).evaluate)(model, args.quick)
    for key, value in metrics.items():
        print(f"{key:<40} {value}")
    if not args.checkpoint and not args.quick:
        print(f"(manifest says: {entry.get('metrics')})")
    return 0


def cmd_generate(args) -> int:
    import inspect

    from course.pipelines import base

    pipe = base.load(args.model, checkpoint=args.checkpoint)
    prompts = [p for p in args.prompt for _ in range(args.num)]
    extra = {}
    text_to_image = "negative_prompts" in inspect.signature(pipe.generate).parameters
    if args.negative_prompt is not None:  # only text-to-image pipelines take negative prompts
        if not text_to_image:
            raise ValueError(f"{args.model} does not take negative prompts (it is not a text-to-image model)")
        extra["negative_prompts"] = [args.negative_prompt] * len(prompts)
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
    if args.size is not None:
        if not text_to_image:
            raise ValueError(f"{args.model} generates at one fixed size; --size is for text-to-image models")
        extra["size"] = tuple(args.size)
    if args.refine:
        from course.recipes import sdxl_shapes

        refiner = base.load("sdxl-shapes-refiner")
        _, images = sdxl_shapes.refine(pipe, refiner, prompts, steps=args.steps, guidance=args.guidance,
                                       seed=args.seed, **extra, **sdxl)
    else:
        images = pipe.generate(prompts, steps=args.steps, guidance=args.guidance, seed=args.seed, **extra, **sdxl)
    for path in base.save_images(images, args.out, prefix=args.model):
        print(path)
    return 0


def cmd_parity(args) -> int:
    from course import parity

    names = args.components or sorted(parity.COMPONENTS)
    failed = 0
    for name in names:
        diff = parity.compare(name)
        ok = diff <= args.tolerance
        failed += not ok
        print(f"{name:<20} max |course - reference| = {diff:.2e}  {'ok' if ok else 'FAIL'}")
    return 1 if failed else 0


def cmd_bench(args) -> int:
    from course import bench

    bench.run(quick=args.quick)
    return 0


def cmd_doctor(args) -> int:
    from course import doctor

    return doctor.run()


def cmd_student_edition(args) -> int:
    from course import student

    for path in student.make_student_edition(paths.NOTEBOOK_DIR, Path(args.dir)):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("doctor", help="check the installation").set_defaults(fn=cmd_doctor)
    sub.add_parser("list", help="the named models").set_defaults(fn=cmd_list)

    p = sub.add_parser("train", help="train a named model")
    p.add_argument("name")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    p.add_argument("--run-dir", default=None, help="where resumable state goes (default runs/NAME)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    p.add_argument("--ship", action="store_true", help="write data/checkpoints/NAME.safetensors and the manifest")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="evaluate a model")
    p.add_argument("name")
    p.add_argument("--checkpoint", default=None, help="a .safetensors file instead of the shipped one")
    p.add_argument("--quick", action="store_true", help="a smaller evaluation")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("generate", help="generate images as PNG files")
    p.add_argument("--model", required=True)
    p.add_argument("--prompt", action="append", default=None, help="repeat for several prompts")
    p.add_argument("--num", type=int, default=1, help="images per prompt")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--negative-prompt", default=None, help="what to steer away from (text-to-image models, guidance > 1)")
    p.add_argument("--sampler", choices=("ddim", "euler"), default=None, help="text-to-image models: DDIM (default) or Euler")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="text-to-image models: image height and width, multiples of 8 (an aspect-ratio bucket)")
    p.add_argument("--original-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="SDXL models: the original size to pretend (default: the image size)")
    p.add_argument("--crop", type=int, nargs=2, metavar=("TOP", "LEFT"), default=None,
                   help="SDXL models: the crop corner to pretend (default 0 0: nothing cut off)")
    p.add_argument("--target-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="SDXL models: the target size condition (default: the image size)")
    p.add_argument("--refine", action="store_true", help="sdxl-shapes: pass the latents through sdxl-shapes-refiner")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="generated")
    p.add_argument("--checkpoint", default=None, help="a .safetensors file instead of the shipped one")
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("parity", help="compare with diffusers / transformers")
    p.add_argument("components", nargs="*")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.set_defaults(fn=cmd_parity)

    p = sub.add_parser("bench", help="speed and acceptance figures")
    p.add_argument("--quick", action="store_true")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("student-edition", help="learner copies of the notebooks")
    p.add_argument("dir")
    p.set_defaults(fn=cmd_student_edition)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "generate" and not args.prompt:
        args.prompt = [""]
    try:
        return args.fn(args)
    except KeyError as err:  # unknown model / component: the message lists the known ones
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from course.checkpoints import CheckpointError

        if isinstance(err, CheckpointError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
