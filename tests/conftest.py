from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Small settings for runs that only need to exercise the machinery (seconds, not minutes).
QUICK = [
    "source_stage.max_epochs=1", "source.fraction=0.2", "trainer.max_epochs=1", "target.fraction=0.1",
    "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false", "threads=1",
]


def run_train(args: list[str], home: Path, check: bool = True, env: dict | None = None,
              script: str = "train.py", timeout: int = 600) -> subprocess.CompletedProcess:
    """Run train.py as a user would, with logs and cache under ``home``."""
    full_env = {**os.environ, "XFER_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def results_files(home: Path) -> list[Path]:
    return sorted((home / "logs").rglob("results.json"))


def load_results(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path
