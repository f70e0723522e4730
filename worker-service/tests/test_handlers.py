"""The built-in handlers on the fake context (testkit.handlers): what each returns, the
progress it reports, and how it fails."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time

import pytest
from pydantic import ValidationError

from common.settings import load_settings
from handlers import checksum, hash_chain, load_handlers, simulated
from handlers.simulated import SimulatedFailure
from testkit.handlers import FakeContext, run_handler

pytestmark = pytest.mark.unit


async def test_simulated_sleeps_within_the_range_without_blocking() -> None:
    settings = load_settings(processing_delay_min_seconds=0.05, processing_delay_max_seconds=0.1)
    started = time.monotonic()
    # Twenty at once finish in about one delay, not twenty: the loop is never blocked.
    runs = await asyncio.gather(
        *(run_handler(simulated.handle, "simulated", settings=settings) for _ in range(20))
    )
    assert 0.05 <= time.monotonic() - started < 1.0
    assert {run.result for run in runs} == {None}


async def test_simulated_fails_at_the_failure_rate() -> None:
    always = load_settings(
        processing_delay_min_seconds=0, processing_delay_max_seconds=0, processing_failure_rate=1
    )
    with pytest.raises(SimulatedFailure):
        await run_handler(simulated.handle, "simulated", settings=always)
    never = always.model_copy(update={"processing_failure_rate": 0.0})
    for _ in range(50):
        await run_handler(simulated.handle, "simulated", settings=never)


async def test_checksum_hashes_the_generated_stream_and_reports_each_chunk() -> None:
    size, chunk = 3 * 65536 + 10, 65536
    run = await run_handler(
        checksum.handle, "checksum", {"size_bytes": size, "chunk_bytes": chunk, "seed": 7}
    )
    expected = hashlib.sha256(random.Random(7).randbytes(size)).hexdigest()
    # randbytes in parts draws the same bytes as at once
    assert run.result == {"sha256": expected, "bytes": size, "chunks": 4}
    assert [fraction for fraction, _ in run.progress] == sorted(f for f, _ in run.progress)
    assert run.progress[-1] == (1.0, f"{size:,} of {size:,} bytes")
    assert len(run.progress) == 4


async def test_checksum_of_nothing() -> None:
    run = await run_handler(checksum.handle, "checksum", {"size_bytes": 0})
    assert run.result == {"sha256": hashlib.sha256().hexdigest(), "bytes": 0, "chunks": 0}
    assert run.progress == []


async def test_checksum_stops_at_the_deadline() -> None:
    with pytest.raises(TimeoutError):
        await run_handler(
            checksum.handle,
            "checksum",
            {"size_bytes": 1 << 30, "chunk_bytes": 4096},
            timeout_seconds=0.2,
        )


async def test_hash_chain_is_sha256_applied_rounds_times() -> None:
    run = await run_handler(hash_chain.handle, "hash_chain", {"rounds": 1000, "seed": "s"})
    digest = b"s"
    digest = hashlib.sha256(digest).digest()
    for _ in range(1000):
        digest = hashlib.sha256(digest).digest()
    assert run.result == {"digest": digest.hex(), "rounds": 1000}


def test_a_bad_payload_is_refused_before_the_handler_runs() -> None:
    with pytest.raises(ValidationError):
        FakeContext("hash_chain", {"rounds": 0}).context()
    with pytest.raises(ValidationError):
        FakeContext("checksum", {"size_bytes": 1, "extra": True}).context()


async def test_progress_must_be_a_fraction() -> None:
    context = FakeContext("simulated").context()
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="progress"):
            context.report_progress(bad)


def test_every_type_of_the_catalogue_has_a_handler() -> None:
    from common.task_types import CATALOGUE

    assert set(load_handlers(CATALOGUE)) == set(CATALOGUE)
    assert load_handlers(["no_such_type"]) == {}
