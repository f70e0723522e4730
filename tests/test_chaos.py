"""The short chaos run (N=200) as part of the suite; `make chaos` is the full one."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.plan import ChaosPlan
from chaos.run import run_chaos

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
async def test_short_chaos_run_loses_nothing_and_completes_nothing_twice(tmp_path: Path) -> None:
    verdict = await run_chaos(ChaosPlan.short(), tmp_path)
    print(verdict.table())
    assert verdict.accepted == 200
    assert verdict.rows >= verdict.accepted + verdict.orphans
    assert verdict.lost == 0
    assert verdict.stuck == 0
    assert verdict.duplicate_completions == 0
    assert verdict.unexplained_failures == 0
    assert verdict.completed + verdict.failed == verdict.rows
    assert verdict.worker_kills >= 2
    assert verdict.retries > 0  # the failure paths really ran
