"""The shape the code keeps: each backend's driver is imported by its adapter alone, the
domain imports no driver at all, and the services reach backends only through the ports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = [ROOT / "common", ROOT / "api-service" / "src", ROOT / "worker-service" / "src"]
DRIVERS = {
    "asyncmy": "common/mysql",
    "aio_pika": "common/amqp",
    "aiormq": "common/amqp",
    "pamqp": "common/amqp",
}
DOMAIN = ["common/tasks.py", "common/errors.py", "common/ports.py", "common/messages.py"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def imported_packages(path: Path) -> set[str]:
    return {module.split(".")[0] for module in imported_modules(path)}


def imports_an_adapter(path: Path) -> bool:
    return any(m.startswith(("common.mysql", "common.amqp")) for m in imported_modules(path))


def production_modules() -> list[Path]:
    return sorted(path for folder in PRODUCTION for path in folder.rglob("*.py"))


def test_each_driver_is_imported_by_its_adapter_only() -> None:
    misplaced = [
        f"{path.relative_to(ROOT)} imports {package}"
        for path in production_modules()
        for package in imported_packages(path) & DRIVERS.keys()
        if not path.relative_to(ROOT).as_posix().startswith(DRIVERS[package] + "/")
    ]
    assert production_modules()
    assert misplaced == []


def test_the_domain_imports_no_driver_and_no_adapter() -> None:
    for name in DOMAIN:
        assert not imported_packages(ROOT / name) & DRIVERS.keys(), name
        assert not imports_an_adapter(ROOT / name), name


def test_the_use_cases_reach_backends_only_through_the_ports() -> None:
    for service in ("api-service", "worker-service"):
        for path in (ROOT / service / "src" / "services").rglob("*.py"):
            assert not imports_an_adapter(path), path
