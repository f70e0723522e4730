"""The services started as real processes, exactly as `make api` / `make worker` start them."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def service_process(
    service: str, env: dict[str, str], log: Path, script: str = "main.py"
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `python <script>` in `<service>/src` with the root on PYTHONPATH; SIGTERM on exit."""
    env = {**env, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, script],
            cwd=ROOT / service / "src",
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


# uvicorn closes a connection idle for 5 s (its timeout_keep_alive). A client that reuses an
# idle connection just as the server closes it gets a ReadError for a request that never
# reached the server; dropping idle connections sooner than the server does avoids the race.
CLIENT_KEEPALIVE_SECONDS = 2.0


def api_client(base_url: str, **options: Any) -> httpx.AsyncClient:
    """An HTTP client for a service process started here."""
    limits = options.pop("limits", httpx.Limits())
    limits = httpx.Limits(
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=CLIENT_KEEPALIVE_SECONDS,
    )
    return httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits, **options)


def wait_ready(base_url: str, log: Path) -> None:
    """Return once the API at `base_url` answers /health; fail with its log after 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the API did not become ready:\n{log.read_text()}")
