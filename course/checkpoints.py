"""Checkpoints: safetensors files with a manifest that says what each one is and how it was made.

The course never stores weights with pickle (`torch.save`): a pickle can run code when it is
loaded, a safetensors file holds only tensors and a header of strings. Each shipped checkpoint
`data/checkpoints/NAME.safetensors` has an entry in `data/checkpoints/MANIFEST.json`; a learner's
own checkpoint `X.safetensors` (written by `export`) has the same entry beside it in `X.json`.

An entry is a dict:

    {"file": "shapes-classifier.safetensors",    # relative to the manifest (or sidecar) folder
     "sha256": "...", "size_bytes": 123456,       # what loading verifies
     "config": {...},                             # the model config, also in the file's header
     "command": "python -m course train shapes-classifier",
     "wall_time_s": 512.3, "metrics": {...},
     "created": "YYYY-MM-DD", "machine": "2-core CPU", "notes": "..."}

Every failure raises `CheckpointError` with a message that says what went wrong and what to do.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import re
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from course.paths import CHECKPOINT_DIR, MANIFEST_PATH, REPO_ROOT


class CheckpointError(Exception):
    """A checkpoint is missing, corrupt, or does not fit the model; the message says what to do."""


class UnknownCheckpointError(CheckpointError, KeyError):
    """A name that the manifest does not list (also a KeyError, as a dict lookup would raise)."""

    def __str__(self) -> str:  # KeyError would quote the message; keep it readable
        return str(self.args[0])


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_FILE_BYTES = 9_500_000  # a shipped checkpoint larger than this is split into shards (git files stay < 10 MB)


# ----------------------------------------------------------------------------- helpers


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_machine() -> str:
    """A short description of where a checkpoint was trained, e.g. "2-core CPU"."""
    text = f"{os.cpu_count()}-core CPU ({platform.machine()})"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


_SHARD_RE = re.compile(r"-\d{5}-of-\d{5}$")


def _how_to_restore(path: Path, command: str | None = None) -> str:
    """What to run to get `path` back: git for shipped files, else the command that made it."""
    path = Path(path).resolve()
    if path.parent == CHECKPOINT_DIR.resolve():
        rel = path.relative_to(REPO_ROOT)
        model = _SHARD_RE.sub("", path.stem)  # a shard is retrained as its whole model
        retrain = command if command and command.endswith("--ship") else f"python -m course train {model} --ship"
        return (
            f"restore it with `git checkout -- {rel.as_posix()}` (or re-download the course), "
            f"or retrain it with `{retrain}`"
        )
    if command:
        return f"restore it from where it came from, or retrain it with `{command}`"
    return (
        "check the path; your own checkpoints are written by `course.checkpoints.export` "
        "(or by the training command that saved it): run that again to recreate it"
    )


def _atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; checkpoints are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dump_json(obj: Any) -> str:
    """The manifest's one JSON style: sorted keys, indent 2, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2) + "\n"


# ----------------------------------------------------------------------------- tensors


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Save tensors to a safetensors file atomically.

    The tensors are detached, moved to the CPU and made contiguous (tensors that share memory,
    such as tied weights, are cloned). The file is written under a temporary name in the same
    folder and renamed over `path` only once complete, so a failed or interrupted save never
    leaves a partial file where a good one was.

    Args:
        path: destination, usually ending in `.safetensors`.
        tensors: name -> tensor.
        metadata: optional header strings (name -> str), e.g. {"config": json.dumps(config)}.
    """
    path = Path(path)
    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"cannot save {path}: values for {bad} are not tensors; "
                              "pass a dict of name -> torch.Tensor (e.g. model.state_dict())")
    metadata = dict(metadata or {})
    bad = [k for k, v in metadata.items() if not isinstance(v, str)]
    if bad:
        raise CheckpointError(f"cannot save {path}: metadata values for {bad} are not strings; "
                              "encode them first, e.g. with json.dumps")
    cpu: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in tensors.items():
        value = value.detach().to("cpu")
        value = value.contiguous() if value.layout == torch.strided else value
        if value.layout == torch.strided and value.numel() > 0:
            ptr = value.untyped_storage().data_ptr()
            if ptr in seen:  # shares memory with an earlier tensor: safetensors refuses those
                value = value.clone()
            seen.add(value.untyped_storage().data_ptr())
        cpu[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(cpu, tmp, metadata=metadata)
        _sort_header(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; checkpoints are meant to be shared
        os.replace(tmp, path)
    except (ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as e:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write {path} ({type(e).__name__}: {str(e).strip()}); nothing was "
            "overwritten. Save dense, plain tensors (e.g. `.to_dense()`, no quantized dtypes)."
        ) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sort_header(path: Path) -> None:
    """Rewrite a safetensors header with sorted keys, so that the same tensors and metadata give the same bytes
    (safetensors writes the metadata in a per-process hash order). The tensor offsets count from the end of
    the header, which keeps its length up to the space padding: no tensor byte moves."""
    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        text = json.dumps(json.loads(f.read(n)), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-len(text) % 8)
        if len(text) == n:  # the same content: never move the data
            f.seek(8)
            f.write(text)


def _check_file(path: Path, sha256: str | None, size_bytes: int | None = None,
                command: str | None = None) -> None:
    """Raise CheckpointError if `path` is missing or differs from the recorded size or hash.

    `command` (the entry's training command) is suggested as the fix for files outside the repo.
    """
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint file not found: {path}. To get it: {_how_to_restore(path, command)}."
        )
    if size_bytes is not None and path.stat().st_size != size_bytes:
        raise CheckpointError(
            f"{path} has {path.stat().st_size} bytes but its entry records {size_bytes}: the file "
            f"is truncated or was replaced. To fix: {_how_to_restore(path, command)}."
        )
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise CheckpointError(
                f"sha256 mismatch for {path}: expected {sha256}, got {actual}. The file is "
                f"corrupt or was modified; the course refuses to load it. To fix: "
                f"{_how_to_restore(path, command)}."
            )


def load_tensors(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file onto the CPU, optionally verifying its sha256 first.

    Args:
        path: the `.safetensors` file.
        sha256: expected hex digest; None skips the check.

    Returns:
        name -> tensor.
    """
    path = Path(path)
    _check_file(path, sha256)
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}): it is truncated, or in another "
            "format (a pickled .pt/.ckpt, which the course never loads). To fix: "
            f"{_how_to_restore(path)}; convert a trusted .pt file with "
            "`safetensors.torch.save_file(torch.load(f, weights_only=True), out)`."
        ) from e


def read_header(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors file's header (without loading tensors)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read the header of {path} ({e}); "
                              f"to fix: {_how_to_restore(Path(path))}") from e


def load_into(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy `tensors` into `model`, strictly: every key present, none extra, every shape equal.

    Args:
        model: the module to fill (its `state_dict()` names and shapes are the reference).
        tensors: name -> tensor, e.g. from `load_tensors`.
        source: where the tensors came from, named in the error message.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{k}: model expects {expected[k]}, file has {tuple(tensors[k].shape)}"
        for k in sorted(set(expected) & set(tensors))
        if tuple(tensors[k].shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        lines = [f"the checkpoint {source} does not fit {type(model).__name__}:"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched)):
            if items:
                shown = items[:10] + ([f"... and {len(items) - 10} more"] if len(items) > 10 else [])
                lines.append(f"  {title} ({len(items)}): " + "; ".join(shown))
        lines.append(
            "Build the model with the config stored with the checkpoint (its manifest or sidecar "
            "entry's 'config', or the preset it was trained with), or retrain for this config."
        )
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(tensors, strict=True)


# ----------------------------------------------------------------------------- manifest


def read_manifest(path: str | Path = MANIFEST_PATH) -> dict[str, dict]:
    """name -> entry from a manifest file; {} when the file does not exist yet."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); restore it with "
                              f"`git checkout -- {path.name}` in its folder") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} should hold a JSON object name -> entry; restore it from git")
    return data


def manifest_entry(name: str, manifest: str | Path = MANIFEST_PATH) -> dict:
    """The manifest entry for `name`; UnknownCheckpointError (a KeyError) listing known names."""
    entries = read_manifest(manifest)
    if name not in entries:
        known = ", ".join(sorted(entries)) or "(none yet)"
        raise UnknownCheckpointError(
            f"no shipped checkpoint named {name!r} in {manifest}; known names: {known}. "
            f"Check the spelling, or train it with `python -m course train {name}`."
        )
    return entries[name]


def _make_entry(path: Path, relative_to: Path, *, config: dict, command: str,
                wall_time_s: float, metrics: dict, notes: str) -> dict:
    """Build an entry for the file just written at `path`."""
    return {
        "file": Path(os.path.relpath(path, relative_to)).as_posix(),
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "config": config,
        "command": command,
        "wall_time_s": round(float(wall_time_s), 1),
        "metrics": metrics,
        "created": datetime.date.today().isoformat(),
        "machine": describe_machine(),
        "notes": notes,
    }


def _header(config: dict, command: str) -> dict[str, str]:
    """The safetensors header of a checkpoint: its config (JSON) and the command that made it."""
    return {"config": json.dumps(config, sort_keys=True), "command": command}


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Split name -> tensor into consecutive groups of at most `max_bytes` (one tensor may exceed it alone)."""
    groups, size = [{}], 0
    for key, value in tensors.items():
        nbytes = value.numel() * value.element_size()
        if groups[-1] and size + nbytes > max_bytes:
            groups.append({})
            size = 0
        groups[-1][key] = value
        size += nbytes
    return groups


def _entry_files(entry: dict, root: Path, name: str) -> list[tuple[Path, str | None, int | None]]:
    """(path, sha256, size_bytes) of every file of a manifest entry: its shards, or its one file."""
    if "shards" in entry:
        return [(root / s["file"], s.get("sha256"), s.get("size_bytes")) for s in entry["shards"]]
    return [(root / entry.get("file", f"{name}.safetensors"), entry.get("sha256"), entry.get("size_bytes"))]


def _own_shards(directory: Path, name: str) -> list[Path]:
    """The shard files of checkpoint `name` in `directory`: `<name>-00001-of-00002.safetensors`, ..., and not
    those of another name that starts with it (`sdxl-shapes-refiner-00001-of-00002` is not sdxl-shapes')."""
    pattern = re.compile(re.escape(name) + r"-\d{5}-of-\d{5}\.safetensors")
    return sorted(p for p in directory.glob(f"{name}-*-of-*.safetensors") if pattern.fullmatch(p.name))


def ship(name: str, tensors: dict[str, torch.Tensor], *, config: dict, command: str,
         wall_time_s: float, metrics: dict, notes: str = "",
         directory: str | Path = CHECKPOINT_DIR, manifest: str | Path = MANIFEST_PATH,
         max_file_bytes: int = MAX_FILE_BYTES) -> dict:
    """Write `<directory>/<name>.safetensors` and record it in the manifest (other entries kept).

    A checkpoint larger than `max_file_bytes` is written as shards `<name>-00001-of-0000N.safetensors`
    (each with the config in its header); its entry lists them under "shards" (file, sha256,
    size_bytes each), "size_bytes" is their total and "sha256" the digest of their digests.

    Returns:
        the new manifest entry.
    """
    if not _NAME_RE.match(name):
        raise CheckpointError(f"invalid checkpoint name {name!r}: use letters, digits, '.', '_', '-'")
    directory, manifest = Path(directory), Path(manifest)
    groups = _shards(tensors, max_file_bytes)
    if len(groups) == 1:
        path = directory / f"{name}.safetensors"
        save_tensors(path, tensors, metadata=_header(config, command))
        entry = _make_entry(path, manifest.parent, config=config, command=command,
                            wall_time_s=wall_time_s, metrics=metrics, notes=notes)
        stale = _own_shards(directory, name)
    else:
        paths = [directory / f"{name}-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
        shards = []
        for path, group in zip(paths, groups):
            save_tensors(path, group, metadata=_header(config, command))
            shard = _make_entry(path, manifest.parent, config={}, command="", wall_time_s=0, metrics={}, notes="")
            shards.append({k: shard[k] for k in ("file", "sha256", "size_bytes")})
        entry = {"shards": shards,
                 "sha256": hashlib.sha256("\n".join(s["sha256"] for s in shards).encode()).hexdigest(),
                 **{k: v for k, v in _make_entry(paths[0], manifest.parent, config=config, command=command,
                                                 wall_time_s=wall_time_s, metrics=metrics, notes=notes).items()
                    if k not in ("file", "sha256")}}
        entry["size_bytes"] = sum(s["size_bytes"] for s in shards)
        stale = [directory / f"{name}.safetensors", *(p for p in _own_shards(directory, name) if p not in paths)]
    entries = read_manifest(manifest)
    entries[name] = entry
    _atomic_write_text(manifest, _dump_json(entries))
    for path in stale:  # an earlier version's files, no longer listed
        path.unlink(missing_ok=True)
    return entry


def record_metrics(name: str, metrics: dict, command: str, manifest: str | Path = MANIFEST_PATH) -> dict:
    """Replace a shipped checkpoint's metrics by ones measured again, its files and sha256 untouched.

    For a model whose evaluation reads another shipped one (sdxl-shapes-refiner is scored on the
    shipped sdxl-shapes' images): when that one is retrained, the weights stay valid and only the
    numbers change. The entry records how and when they were measured ("metrics_command",
    "metrics_date"); the rest of the manifest is kept.

    Returns:
        the updated entry.
    """
    manifest = Path(manifest)
    entries = read_manifest(manifest)
    entry = manifest_entry(name, manifest)  # UnknownCheckpointError for a name that is not shipped
    entry |= {"metrics": metrics, "metrics_command": command, "metrics_date": datetime.date.today().isoformat()}
    entries[name] = entry
    _atomic_write_text(manifest, _dump_json(entries))
    return entry


def export(path: str | Path, tensors: dict[str, torch.Tensor], *, config: dict, command: str,
           wall_time_s: float, metrics: dict, notes: str = "") -> dict:
    """Write a learner's checkpoint `X.safetensors` anywhere, with its entry in `X.json` beside it.

    Returns:
        the entry written to the sidecar.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: a checkpoint path must end in .safetensors")
    save_tensors(path, tensors, metadata=_header(config, command))
    entry = _make_entry(path, path.parent, config=config, command=command,
                        wall_time_s=wall_time_s, metrics=metrics, notes=notes)
    _atomic_write_text(path.with_suffix(".json"), _dump_json(entry))
    return entry


def load_checkpoint(name: str | None = None, path: str | Path | None = None, *,
                    manifest: str | Path = MANIFEST_PATH) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a verified checkpoint: a shipped one by `name`, or a file by `path`.

    By name the file is checked against its manifest entry (size and sha256). By path it is
    checked against the sidecar `X.json` when there is one; without a sidecar the config comes
    from the file's header and the hash cannot be verified (a warning, not an error).

    Returns:
        (name -> tensor, entry) where entry["config"] is the model config.
    """
    if (name is None) == (path is None):
        raise CheckpointError("pass exactly one of name= (a shipped checkpoint) or path= (a file)")
    if name is not None:
        entry = manifest_entry(name, manifest)
        tensors = {}
        for file, sha, size in _entry_files(entry, Path(manifest).parent, name):
            _check_file(file, sha, size, entry.get("command"))
            tensors.update(load_tensors(file))
        return tensors, entry
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            entry = json.loads(sidecar.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{sidecar} is not valid JSON ({e}); fix or delete it "
                                  "(the config is also stored inside the .safetensors file)") from e
        _check_file(path, entry.get("sha256"), entry.get("size_bytes"), entry.get("command"))
        return load_tensors(path), entry
    _check_file(path, None)
    warnings.warn(f"{path} has no sidecar {sidecar.name}: its sha256 cannot be verified; "
                  "the config is read from the file's header", stacklevel=2)
    header = read_header(path)
    tensors = load_tensors(path)
    config = json.loads(header["config"]) if "config" in header else {}
    return tensors, {"file": path.name, "config": config, "command": header.get("command", "")}


def identify(tensors: dict[str, torch.Tensor], entry: dict,
             manifest: str | Path = MANIFEST_PATH) -> tuple[list[str], str]:
    """Which zoo model a checkpoint holds: (candidate names, how that was found).

    The training command in its metadata ("python -m course train NAME ...") names it; without one,
    the shipped checkpoints whose tensor names and shapes equal the file's are the candidates (the
    models of one family share them). ([], "") when nothing says.
    """
    found = re.search(r"course train (\S+)", entry.get("command") or "")
    if found:
        return [found.group(1)], f"its metadata says it was made by `{entry['command']}`"
    shapes, root = {k: list(v.shape) for k, v in tensors.items()}, Path(manifest).parent
    matches = []
    for name, shipped in sorted(read_manifest(manifest).items()):
        theirs: dict[str, list[int]] = {}
        try:
            for file, _, _ in _entry_files(shipped, root, name):
                with safe_open(str(file), framework="pt") as f:
                    theirs.update({k: list(f.get_slice(k).get_shape()) for k in f.keys()})
        except (SafetensorError, OSError):
            continue
        if theirs == shapes:
            matches.append(name)
    return matches, (f"its tensors are those of the shipped {' / '.join(matches)}" if matches else "")


def verify_all(manifest: str | Path = MANIFEST_PATH) -> list[tuple[str, bool, str]]:
    """Check every manifest entry's file (present, size, sha256, readable header).

    Returns:
        one (name, ok, message) per entry, sorted by name, for `python -m course doctor`.
    """
    results = []
    for name, entry in sorted(read_manifest(manifest).items()):
        try:
            for file, sha, size in _entry_files(entry, Path(manifest).parent, name):
                _check_file(file, sha, size, entry.get("command"))
                read_header(file)
        except CheckpointError as e:
            results.append((name, False, str(e)))
        else:
            mb = entry.get("size_bytes", 0) / 1e6
            results.append((name, True, f"ok ({mb:.2f} MB, sha256 {entry['sha256'][:12]}...)"))
    return results
