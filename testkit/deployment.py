"""docker-compose.yml and the Dockerfiles read as data, for the tests that hold them against
the settings and for `make smoke`, which runs the services as the containers would."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_SERVICES = {"api_service": "api-service", "worker_service": "worker-service"}

_SUBSTITUTION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::-(?P<default>[^}]*))?\}")


def env_example(*, before: str | None = None) -> dict[str, str]:
    """.env.example's variables and their values (up to the line `before` starts, if given)."""
    text = (ROOT / ".env.example").read_text()
    if before is not None:
        text = text.split(before)[0]
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, re.M))


def load_compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def substitute(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's `${VAR:-default}`, with no .env: the defaults (or `env`) fill in."""
    env = env or {}
    return _SUBSTITUTION.sub(lambda m: env.get(m["name"]) or (m["default"] or ""), value)


def compose_environment(service: str) -> dict[str, str]:
    """What compose passes to `service`, with every variable at its default."""
    environment = load_compose()["services"][service].get("environment", {})
    return {name: substitute(str(value)) for name, value in environment.items()}


@dataclass
class Dockerfile:
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    bases: list[str] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def read_dockerfile(path: Path) -> Dockerfile:
    """The final stage's ENV, WORKDIR, CMD and HEALTHCHECK (exec form), and every FROM."""
    result = Dockerfile()
    for keyword, rest in _instructions(path.read_text()):
        if keyword == "FROM":
            result.bases.append(rest.split()[0])
            result.env, result.workdir = {}, "/"
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                result.env[name] = value
        elif keyword == "WORKDIR":
            result.workdir = rest
        elif keyword == "CMD":
            result.cmd = json.loads(rest)
        elif keyword == "HEALTHCHECK":
            result.healthcheck = json.loads(rest.split(" CMD ", 1)[1])
    return result
