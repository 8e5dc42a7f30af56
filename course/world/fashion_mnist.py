"""Fashion-MNIST: the real images of chapter 01, read from the original gzipped IDX files.

70,000 grey 28x28 pictures of clothes in ten classes (60,000 train, 10,000 test), from Zalando
Research. `load_fashion_mnist` looks for the four files, in order, in
    1. the `root` argument,
    2. the folder named by the environment variable FASHION_MNIST_DIR,
    3. the folders of `SEARCH_DIRS`: Debian's `dataset-fashion-mnist` package and the course cache,
and when none has them and the machine is online, downloads them into the cache with a progress
bar, checking the official MD5 of each download. Every file it reads is checked against the
SHA-256 of its decompressed contents, so a recompressed copy (Debian's has a different gzip
header, hence a different MD5, over the same deflate stream) is accepted and a corrupt one is not.

Ref: Xiao, Rasul & Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
Learning Algorithms"; LeCun et al., the IDX file format of MNIST.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import urlopen

import numpy as np
import torch
from tqdm.auto import tqdm

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # label i is CLASSES[i]

URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"  # official mirror (upstream README)
ENV_VAR = "FASHION_MNIST_DIR"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # `apt install dataset-fashion-mnist`
CACHE_DIR = Path.home() / ".cache" / "diffusion-from-scratch" / "fashion-mnist"  # downloads go here
SEARCH_DIRS: list[Path] = [DEBIAN_DIR, CACHE_DIR]  # searched after `root` and $FASHION_MNIST_DIR


@dataclass(frozen=True)
class IdxFile:
    """One of the four official files and what it must contain."""

    name: str  # file name, without ".gz"
    shape: tuple[int, ...]  # array shape: (N,) labels or (N, 28, 28) images
    gz_md5: str  # MD5 of the official .gz, as the upstream README lists it
    idx_sha256: str  # SHA-256 of the decompressed IDX bytes (checked on every load)


FILES: dict[tuple[str, str], IdxFile] = {
    ("train", "images"): IdxFile("train-images-idx3-ubyte", (60000, 28, 28), "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                 "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    ("train", "labels"): IdxFile("train-labels-idx1-ubyte", (60000,), "25c81989df183df01b3e8a0aad5dffbe",
                                 "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    ("test", "images"): IdxFile("t10k-images-idx3-ubyte", (10000, 28, 28), "bef4ecab320f06d8554ea6380940ec79",
                                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    ("test", "labels"): IdxFile("t10k-labels-idx1-ubyte", (10000,), "bb300cfdad3c16e7a12a480ee83cd310",
                                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
SPLITS = ("train", "test")


class CorruptFileError(ValueError):
    """A Fashion-MNIST file exists but is not what it should be."""


# --- reading and checking IDX files ----------------------------------------------------------


def _file_in(folder: Path, spec: IdxFile) -> Path | None:
    """The gzipped (preferred) or plain copy of `spec` in `folder`, if there is one."""
    for path in (folder / f"{spec.name}.gz", folder / spec.name):
        if path.is_file():
            return path
    return None


def decode_idx(raw: bytes, spec: IdxFile, path: Path | str = "<bytes>") -> np.ndarray:
    """Check and decode the bytes of one uncompressed IDX file.

    IDX: a 4-byte magic (0, 0, type 0x08 = uint8, number of dimensions), one big-endian uint32 per
    dimension, then the values in C order.

    Args:
        raw: the decompressed file contents.
        spec: which file it should be.
        path: where it came from, for error messages.

    Returns:
        A read-only uint8 array of shape spec.shape.
    """
    fix = f"Delete {path} and get the file again (see `load_fashion_mnist`)."
    ndim = len(spec.shape)
    if len(raw) < 4 or raw[:4] != bytes([0, 0, 0x08, ndim]):
        raise CorruptFileError(f"{path}: bad IDX magic number {raw[:4].hex()!r}, expected "
                               f"{bytes([0, 0, 8, ndim]).hex()!r} (uint8, {ndim}-D). {fix}")
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    if dims != spec.shape:
        raise CorruptFileError(f"{path}: IDX header says shape {dims}, expected {spec.shape}. {fix}")
    if len(raw) != header + int(np.prod(dims)):
        raise CorruptFileError(f"{path}: {len(raw) - header} data bytes, expected {int(np.prod(dims))} "
                               f"(truncated or padded). {fix}")
    if hashlib.sha256(raw).hexdigest() != spec.idx_sha256:
        raise CorruptFileError(f"{path}: contents differ from the official {spec.name} (SHA-256 mismatch). {fix}")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    array.flags.writeable = False  # shared by every caller through the cache below
    return array


@lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int, spec: IdxFile) -> np.ndarray:
    """Decompress, check and decode one file; cached per (path, modification time)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if path.endswith(".gz"):
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise CorruptFileError(f"{path}: cannot decompress ({err}). Delete it and get the file again.") from err
    return decode_idx(raw, spec, path)


def _read_file(folder: Path, spec: IdxFile) -> np.ndarray:
    path = _file_in(folder, spec)
    return _read(str(path), path.stat().st_mtime_ns, spec)


# --- finding or downloading the files ----------------------------------------------------------


def _online(timeout: float = 3.0) -> bool:
    """Whether the official server answers."""
    host = urlparse(URL).hostname
    try:
        with socket.create_connection((host, 80), timeout=timeout):
            return True
    except OSError:
        return False


def _candidate_dirs(root: str | Path | None) -> list[Path]:
    dirs = [Path(root)] if root is not None else []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]))
    return dirs + [Path(d) for d in SEARCH_DIRS]


def download(split: str, folder: Path = CACHE_DIR) -> Path:
    """Download the two files of `split` from the official server into `folder`, checking MD5s.

    Args:
        split: "train" or "test".
        folder: where to put them (created if needed).

    Returns:
        `folder`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("images", "labels"):
        spec = FILES[split, kind]
        target = folder / f"{spec.name}.gz"
        if target.is_file():
            continue
        partial, md5 = target.with_suffix(".gz.part"), hashlib.md5()
        with urlopen(URL + f"{spec.name}.gz", timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
        if md5.hexdigest() != spec.gz_md5:
            partial.unlink()
            raise CorruptFileError(f"download of {target.name} has MD5 {md5.hexdigest()}, expected the official "
                                   f"{spec.gz_md5}; try again, or get the data another way (see load_fashion_mnist)")
        partial.replace(target)  # only complete, verified files get the real name
    return folder


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The Fashion-MNIST images and labels of one split.

    Looks in `root`, $FASHION_MNIST_DIR, then `SEARCH_DIRS`; downloads into CACHE_DIR if online
    and none has the files. Decoded arrays are cached in memory, so later calls are free.

    Args:
        split: "train" (60,000 images) or "test" (10,000).
        root: a folder holding the IDX files (gzipped or not); optional.

    Returns:
        images: (N, 28, 28) uint8, 0 = black background, read-only.
        labels: (N,) int64 in 0 ... 9, names in CLASSES.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    specs = FILES[split, "images"], FILES[split, "labels"]
    dirs = _candidate_dirs(root)
    found = next((d for d in dirs if all(_file_in(d, s) for s in specs)), None)
    if found is None:
        if not _online():
            searched = "\n".join(f"  - {d}" for d in dirs)
            raise FileNotFoundError(
                f"Fashion-MNIST ({split}) not found. Looked for {specs[0].name}.gz and {specs[1].name}.gz in:\n"
                f"{searched}\nand the machine is offline, so it cannot be downloaded. Three ways to get it:\n"
                f"  1. on Debian/Ubuntu: sudo apt install dataset-fashion-mnist  (installs into {DEBIAN_DIR})\n"
                f"  2. put the four files from {URL} in a folder and set {ENV_VAR}=/that/folder "
                f"(or pass root=...)\n"
                f"  3. go online and call load_fashion_mnist again: it downloads them into {CACHE_DIR}")
        found = download(split, CACHE_DIR)
    images, labels = (_read_file(found, spec) for spec in specs)
    return images, labels.astype(np.int64)


def to_tensor_32(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) images -> float (N, 1, 32, 32) in [-1, 1], padded with the background -1.

    32 = 2^5 lets a U-Net halve the resolution five times; the 2-pixel border is background.

    Args:
        images: (N, 28, 28) uint8, as `load_fashion_mnist` returns them.

    Returns:
        (N, 1, 32, 32) float32 tensor.
    """
    x = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images  # copy: cache is read-only
    if x.dtype != torch.uint8 or x.ndim != 3 or tuple(x.shape[1:]) != (28, 28):
        raise ValueError(f"expected uint8 images of shape (N, 28, 28), got {x.dtype} {tuple(x.shape)}")
    out = torch.full((x.shape[0], 1, 32, 32), -1.0, device=x.device)  # (N, 1, 32, 32), all background
    out[:, 0, 2:30, 2:30] = x.float() / 127.5 - 1.0  # (N, 28, 28) in [-1, 1], centred
    return out
