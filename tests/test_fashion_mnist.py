"""Tests for course.world.fashion_mnist: the real files, the search order, corrupt files, the download."""

import gzip
import shutil
import struct

import numpy as np
import pytest
import torch

from course.world import fashion_mnist as fm

HAVE_DEBIAN = all(fm._file_in(fm.DEBIAN_DIR, spec) for spec in fm.FILES.values())
needs_debian = pytest.mark.skipif(not HAVE_DEBIAN, reason=f"Fashion-MNIST not installed in {fm.DEBIAN_DIR}")


@pytest.fixture
def nowhere(monkeypatch, tmp_path):
    """No data anywhere but what a test puts there, and no network."""
    monkeypatch.setattr(fm, "SEARCH_DIRS", [])
    monkeypatch.setattr(fm, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    monkeypatch.setattr(fm, "_online", lambda timeout=3.0: False)
    return tmp_path


@needs_debian
@pytest.mark.parametrize("split, n", [("train", 60000), ("test", 10000)])
def test_real_files_shapes_dtypes_labels(split, n):
    images, labels = fm.load_fashion_mnist(split, root=fm.DEBIAN_DIR)
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert np.array_equal(np.bincount(labels), np.full(10, n // 10))  # balanced, labels 0 ... 9
    assert images.max() == 255 and images.min() == 0
    assert len(fm.CLASSES) == 10


@needs_debian
def test_decoded_arrays_are_cached_and_read_only():
    first, _ = fm.load_fashion_mnist("test", root=fm.DEBIAN_DIR)
    again, _ = fm.load_fashion_mnist("test", root=fm.DEBIAN_DIR)
    assert again is first
    with pytest.raises(ValueError):
        first[0, 0, 0] = 1


@needs_debian
def test_env_var_is_searched(nowhere, monkeypatch):
    monkeypatch.setenv(fm.ENV_VAR, str(fm.DEBIAN_DIR))
    images, labels = fm.load_fashion_mnist("test", root=nowhere)  # empty root: falls through to the env var
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)


def test_missing_data_offline_explains_the_three_ways(nowhere):
    with pytest.raises(FileNotFoundError) as err:
        fm.load_fashion_mnist("test", root=nowhere)
    message = str(err.value)
    assert "apt install dataset-fashion-mnist" in message
    assert fm.ENV_VAR in message and "online" in message
    assert str(nowhere) in message and "t10k-images-idx3-ubyte.gz" in message


def test_bad_split_and_bad_images():
    with pytest.raises(ValueError, match="split"):
        fm.load_fashion_mnist("validation")
    with pytest.raises(ValueError, match="uint8"):
        fm.to_tensor_32(np.zeros((2, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        fm.to_tensor_32(np.zeros((2, 32, 32), dtype=np.uint8))


def _idx(values: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX bytes."""
    header = bytes([0, 0, 0x08, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    return header + values.astype(np.uint8).tobytes()


def test_decode_idx_rejects_corrupt_contents():
    spec = fm.FILES["test", "labels"]
    good_shape = np.zeros(spec.shape, dtype=np.uint8)
    with pytest.raises(fm.CorruptFileError, match="magic"):
        fm.decode_idx(b"\x00\x00\x08\x03" + _idx(good_shape)[4:], spec)  # says 3-D
    with pytest.raises(fm.CorruptFileError, match="shape"):
        fm.decode_idx(_idx(np.zeros(9999, dtype=np.uint8)), spec)
    with pytest.raises(fm.CorruptFileError, match="truncated"):
        fm.decode_idx(_idx(good_shape)[:-5], spec)
    with pytest.raises(fm.CorruptFileError, match="SHA-256"):
        fm.decode_idx(_idx(good_shape), spec)  # well formed, but not the real labels


def test_to_tensor_32_pads_with_background():
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    x = fm.to_tensor_32(images.astype(np.uint8))
    assert x.shape == (2, 1, 32, 32) and x.dtype == torch.float32
    assert torch.all(x[:, :, :2] == -1) and torch.all(x[:, :, :, -2:] == -1)
    torch.testing.assert_close(x[:, 0, 2:30, 2:30], torch.from_numpy(images).float() / 127.5 - 1)
    assert x.min() == -1 and x.max() == 1


@needs_debian
def test_truncated_gzip_is_reported(nowhere):
    for kind in ("images", "labels"):
        name = fm.FILES["test", kind].name + ".gz"
        raw = (fm.DEBIAN_DIR / name).read_bytes()
        (nowhere / name).write_bytes(raw[: len(raw) // 2] if kind == "labels" else raw)
    with pytest.raises(fm.CorruptFileError, match="decompress"):
        fm.load_fashion_mnist("test", root=nowhere)


def _official_gz(spec: fm.IdxFile) -> bytes:
    """Rebuild the official .gz from Debian's copy, whose gzip header lost the file name and mtime.

    The deflate stream and trailer are the same bytes; the MD5 check in `download` proves it.
    """
    raw = (fm.DEBIAN_DIR / f"{spec.name}.gz").read_bytes()
    mtime = 1504176627  # 2017-08-31 10:50:27 UTC, the test split's original timestamp
    return b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + b"\x00\x03" + spec.name.encode() + b"\x00" + raw[10:]


@needs_debian
def test_download_checks_the_official_md5(nowhere, monkeypatch):
    server = nowhere / "server"
    server.mkdir()
    for kind in ("images", "labels"):
        spec = fm.FILES["test", kind]
        (server / f"{spec.name}.gz").write_bytes(_official_gz(spec))
    monkeypatch.setattr(fm, "URL", server.as_uri() + "/")
    monkeypatch.setattr(fm, "_online", lambda timeout=3.0: True)
    images, labels = fm.load_fashion_mnist("test", root=nowhere / "empty")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert sorted(p.name for p in fm.CACHE_DIR.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]

    # Debian's recompressed copy is the same data but not the official download: refused, nothing kept.
    shutil.rmtree(fm.CACHE_DIR)
    shutil.copy(fm.DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz", server / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(fm.CorruptFileError, match="MD5"):
        fm.download("test", fm.CACHE_DIR)
    assert not (fm.CACHE_DIR / "t10k-labels-idx1-ubyte.gz").exists()
    assert gzip.decompress(_official_gz(fm.FILES["test", "labels"])) == gzip.decompress(
        (fm.DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
