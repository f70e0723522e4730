"""The Celery peer's own virtualenv, bench/.venv-celery, made from its requirements."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys

from bench.services import PEER, PEER_PYTHON

REQUIREMENTS = PEER / "requirements.txt"
VENV = PEER_PYTHON.parents[1]
MARKER = VENV / ".installed"

logger = logging.getLogger("bench")


def ensure_peer_venv() -> None:
    """Create or refresh the venv when the requirements changed since it was made."""
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if MARKER.exists() and MARKER.read_text().strip() == wanted and PEER_PYTHON.exists():
        return
    logger.info("making the Celery peer's venv in %s", VENV)
    _run(sys.executable, "-m", "venv", "--clear", str(VENV))
    _run(str(PEER_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(REQUIREMENTS))  # fmt: skip
    MARKER.write_text(wanted + "\n")


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
