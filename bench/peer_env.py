"""Each peer's own virtualenv, bench/.venv-<peer> (bench/.venv-celery, bench/.venv-dramatiq),
made from its fully pinned requirements.txt."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys

from bench.peers import PEERS, Peer

logger = logging.getLogger("bench")


def ensure_peer_venvs() -> None:
    for peer in PEERS:
        ensure_peer_venv(peer)


def ensure_peer_venv(peer: Peer) -> None:
    """Create or refresh the peer's venv when its requirements changed since it was made."""
    wanted = hashlib.sha256(peer.requirements.read_bytes()).hexdigest()
    marker = peer.venv / ".installed"
    if marker.exists() and marker.read_text().strip() == wanted and peer.python.exists():
        return
    logger.info("making the %s peer's venv in %s", peer.label, peer.venv)
    _run(sys.executable, "-m", "venv", "--clear", str(peer.venv))
    _run(str(peer.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(peer.requirements))  # fmt: skip
    marker.write_text(wanted + "\n")


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
