"""Tests for course.checkpoints: one test per fault, each checking what the message tells the user."""

import json

import pytest
import torch
from torch import nn

from course import checkpoints as ck
from course.checkpoints import CheckpointError


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(3, 4, generator=g), "bias": torch.randn(3, generator=g)}


def _ship(tmp_path, name="toy", seed=0, **kw):
    return ck.ship(name, _tensors(seed), config={"width": 4}, command=f"python -m course train {name}",
                   wall_time_s=1.25, metrics={"loss": 0.5}, directory=tmp_path,
                   manifest=tmp_path / "MANIFEST.json", **kw)


def test_round_trip_by_name_and_by_path(tmp_path):
    entry = _ship(tmp_path)
    assert entry["file"] == "toy.safetensors"
    assert (tmp_path / "toy.safetensors").stat().st_mode & 0o777 == 0o644
    assert entry["sha256"] == ck.sha256_file(tmp_path / "toy.safetensors")
    assert entry["size_bytes"] == (tmp_path / "toy.safetensors").stat().st_size
    assert set(entry) == {"file", "sha256", "size_bytes", "config", "command", "wall_time_s",
                          "metrics", "created", "machine", "notes"}
    tensors, loaded = ck.load_checkpoint("toy", manifest=tmp_path / "MANIFEST.json")
    assert loaded == entry
    for k, v in _tensors().items():
        assert torch.equal(tensors[k], v)
    assert json.loads(ck.read_header(tmp_path / "toy.safetensors")["config"]) == {"width": 4}

    out = tmp_path / "mine" / "model.safetensors"
    side = ck.export(out, _tensors(1), config={"width": 4}, command="fit(...)", wall_time_s=2.0,
                     metrics={})
    assert json.loads(out.with_suffix(".json").read_text()) == side
    tensors, loaded = ck.load_checkpoint(path=out)
    assert torch.equal(tensors["bias"], _tensors(1)["bias"]) and loaded["config"] == {"width": 4}

    model = nn.Linear(4, 3)
    ck.load_into(model, tensors, source=str(out))
    assert torch.equal(model.weight.detach(), _tensors(1)["weight"])


def test_path_without_sidecar_warns_and_reads_config_from_header(tmp_path):
    out = tmp_path / "model.safetensors"
    ck.export(out, _tensors(), config={"depth": 2}, command="c", wall_time_s=0.0, metrics={})
    out.with_suffix(".json").unlink()
    with pytest.warns(UserWarning, match="cannot be verified"):
        tensors, entry = ck.load_checkpoint(path=out)
    assert entry["config"] == {"depth": 2} and set(tensors) == {"weight", "bias"}


def test_the_same_tensors_and_metadata_give_the_same_bytes_in_any_process(tmp_path):
    """safetensors orders the metadata by a per-process hash map; the saved header is sorted, so a
    reproduced checkpoint has the shipped sha256."""
    import hashlib
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from course import checkpoints\n"
        "t = {f'w{i}': torch.arange(6.0).reshape(2, 3) + i for i in range(16)}\n"
        "checkpoints.save_tensors(sys.argv[1], t, {f'key{i}': f'value {i} \u00d7' for i in range(16)})\n"
    )
    digests = set()
    for i in range(4):
        path = tmp_path / f"{i}.safetensors"
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    from safetensors import safe_open

    with safe_open(str(tmp_path / "0.safetensors"), "pt") as f:
        assert f.metadata()["key3"] == "value 3 \u00d7" and torch.equal(f.get_tensor("w2"), torch.arange(6.0).reshape(2, 3) + 2)


def test_truncated_file(tmp_path):
    path = tmp_path / "t.safetensors"
    ck.save_tensors(path, _tensors())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file.*truncated"):
        ck.load_tensors(path)


def test_truncated_shipped_file_names_size_and_fix(tmp_path):
    _ship(tmp_path)
    path = tmp_path / "toy.safetensors"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match="truncated") as e:
        ck.load_checkpoint("toy", manifest=tmp_path / "MANIFEST.json")
    assert "retrain it with `python -m course train toy`" in str(e.value)


def test_tampered_byte_is_a_hash_mismatch(tmp_path):
    entry = _ship(tmp_path)
    path = tmp_path / "toy.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip the last byte of the last tensor: same size, still parses
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        ck.load_checkpoint("toy", manifest=tmp_path / "MANIFEST.json")
    msg = str(e.value)
    assert "sha256 mismatch" in msg and entry["sha256"] in msg and ck.sha256_file(path) in msg
    assert "modified" in msg
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        ck.load_tensors(path, sha256=entry["sha256"])


def test_wrong_shape(tmp_path):
    tensors = _tensors()
    tensors["weight"] = torch.zeros(3, 5)
    with pytest.raises(CheckpointError) as e:
        ck.load_into(nn.Linear(4, 3), tensors, source="toy.safetensors")
    msg = str(e.value)
    assert "shape mismatches (1)" in msg and "weight: model expects (3, 4), file has (3, 5)" in msg
    assert "toy.safetensors" in msg and "config" in msg


def test_missing_key(tmp_path):
    tensors = _tensors()
    del tensors["bias"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): bias") as e:
        ck.load_into(nn.Linear(4, 3), tensors, source="x")
    assert "unexpected" not in str(e.value)


def test_unexpected_key(tmp_path):
    tensors = _tensors()
    tensors["extra.weight"] = torch.zeros(2)
    model = nn.Linear(4, 3)
    before = model.weight.detach().clone()
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): extra.weight"):
        ck.load_into(model, tensors, source="x")
    assert torch.equal(model.weight.detach(), before)  # nothing loaded on failure


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as e:
        ck.load_tensors(tmp_path / "nope.safetensors")
    assert "not found" in str(e.value) and "nope.safetensors" in str(e.value)
    # a shipped file that is gone names the commands that make it again
    with pytest.raises(CheckpointError) as e:
        ck.load_tensors(ck.CHECKPOINT_DIR / "no-such-model.safetensors")
    msg = str(e.value)
    assert "git checkout -- data/checkpoints/no-such-model.safetensors" in msg
    assert "python -m course train no-such-model --ship" in msg


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x80\x04\x95pickled state dict, not safetensors" * 4)
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as e:
        ck.load_tensors(path)
    assert "pickle" in str(e.value)


def test_manifest_unknown_name(tmp_path):
    _ship(tmp_path, "alpha")
    _ship(tmp_path, "beta")
    with pytest.raises(CheckpointError) as e:
        ck.manifest_entry("gamma", tmp_path / "MANIFEST.json")
    assert isinstance(e.value, KeyError)
    assert "'gamma'" in str(e.value) and "known names: alpha, beta" in str(e.value)


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "m.safetensors"
    ck.save_tensors(path, _tensors())
    before = path.read_bytes()
    bad = {"weight": torch.randn(3, 4), "sparse": torch.eye(3).to_sparse()}  # safetensors refuses
    with pytest.raises(CheckpointError, match="nothing was overwritten"):
        ck.save_tensors(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp file left
    with pytest.raises(CheckpointError, match="not tensors"):
        ck.save_tensors(path, {"weight": [1.0, 2.0]})
    assert path.read_bytes() == before


def test_save_handles_shared_memory_and_non_contiguous(tmp_path):
    w = torch.randn(4, 3)
    path = tmp_path / "tied.safetensors"
    ck.save_tensors(path, {"a": w, "b": w, "t": w.t()})
    out = ck.load_tensors(path)
    assert torch.equal(out["a"], w) and torch.equal(out["b"], w) and torch.equal(out["t"], w.t())


def test_ship_updates_only_its_entry(tmp_path):
    manifest = tmp_path / "MANIFEST.json"
    a = _ship(tmp_path, "alpha", seed=0)
    b = _ship(tmp_path, "beta", seed=1)
    b2 = _ship(tmp_path, "beta", seed=2, notes="retrained")
    entries = ck.read_manifest(manifest)
    assert entries["alpha"] == a and entries["beta"] == b2 and b2["sha256"] != b["sha256"]
    text = manifest.read_text()
    assert text.endswith("}\n") and text == json.dumps(entries, sort_keys=True, indent=2) + "\n"


def test_verify_all_reports_each_entry(tmp_path):
    _ship(tmp_path, "good")
    _ship(tmp_path, "bad")
    (tmp_path / "bad.safetensors").write_bytes(b"x" * 10)
    results = {name: (ok, msg) for name, ok, msg in ck.verify_all(tmp_path / "MANIFEST.json")}
    assert results["good"][0] and results["good"][1].startswith("ok")
    assert not results["bad"][0] and "truncated" in results["bad"][1]


def test_large_checkpoints_ship_as_verified_shards(tmp_path):
    manifest = tmp_path / "MANIFEST.json"
    entry = _ship(tmp_path, "big", max_file_bytes=40)  # weight: 48 bytes, bias: 12 bytes -> two shards
    names = ["big-00001-of-00002.safetensors", "big-00002-of-00002.safetensors"]
    assert [s["file"] for s in entry["shards"]] == names and "file" not in entry
    assert entry["size_bytes"] == sum((tmp_path / n).stat().st_size for n in names)
    assert all(s["sha256"] == ck.sha256_file(tmp_path / s["file"]) for s in entry["shards"])
    tensors, loaded = ck.load_checkpoint("big", manifest=manifest)
    assert loaded == entry and set(tensors) == {"weight", "bias"}
    assert all(torch.equal(tensors[k], v) for k, v in _tensors().items())
    assert [name for name, ok, _ in ck.verify_all(manifest) if ok] == ["big"]
    # a tampered shard is refused, by load and by doctor
    raw = bytearray((tmp_path / names[1]).read_bytes())
    raw[-1] ^= 1
    (tmp_path / names[1]).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        ck.load_checkpoint("big", manifest=manifest)
    assert not ck.verify_all(manifest)[0][1]
    # shipping it again as one file removes the shards
    _ship(tmp_path, "big")
    assert (tmp_path / "big.safetensors").is_file() and not list(tmp_path.glob("big-*"))
    _ship(tmp_path, "big", max_file_bytes=40)
    assert not (tmp_path / "big.safetensors").exists() and len(list(tmp_path.glob("big-*"))) == 2


def test_shipping_a_model_keeps_the_shards_of_another_whose_name_starts_with_its_name(tmp_path):
    """Shipping sdxl-shapes once deleted sdxl-shapes-refiner's shards (their names match sdxl-shapes-*-of-*)."""
    manifest = tmp_path / "MANIFEST.json"
    _ship(tmp_path, "big-refiner", max_file_bytes=40)
    _ship(tmp_path, "big", max_file_bytes=40)
    _ship(tmp_path, "big", seed=1)  # as one file: big's own shards go, big-refiner's stay
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "big-refiner-00001-of-00002.safetensors", "big-refiner-00002-of-00002.safetensors", "big.safetensors"]
    assert all(ok for _, ok, _ in ck.verify_all(manifest))


def test_record_metrics_replaces_only_the_metrics_of_a_shipped_entry(tmp_path):
    manifest = tmp_path / "MANIFEST.json"
    entry = _ship(tmp_path)
    _ship(tmp_path, name="other")
    before = (tmp_path / "toy.safetensors").read_bytes()
    updated = ck.record_metrics("toy", {"loss": 0.25}, "python -m course eval toy --record", manifest=manifest)
    assert updated["metrics"] == {"loss": 0.25} and updated["metrics_command"].endswith("--record")
    assert {k: v for k, v in updated.items() if not k.startswith("metrics")} == \
        {k: v for k, v in entry.items() if k != "metrics"}
    assert (tmp_path / "toy.safetensors").read_bytes() == before
    assert ck.read_manifest(manifest)["other"]["metrics"] == {"loss": 0.5}
    ck.load_checkpoint("toy", manifest=manifest)  # still verifies
    with pytest.raises(ck.UnknownCheckpointError):
        ck.record_metrics("nope", {}, "c", manifest=manifest)
