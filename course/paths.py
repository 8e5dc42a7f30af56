"""Where the course keeps its files: one place, so nothing else builds paths by hand."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
CHECKPOINT_DIR = DATA_DIR / "checkpoints"
MANIFEST_PATH = CHECKPOINT_DIR / "MANIFEST.json"
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
RUNS_DIR = REPO_ROOT / "runs"  # training runs (git-ignored); resumable state lives here
