"""Schemathesis against the running API: every operation of the OpenAPI document the API
process serves at /openapi.json, with every check `schemathesis run` makes by default, and no
other. `case.call_and_validate()` with no `checks=` runs them all: not_a_server_error,
status_code_conformance, content_type_conformance, response_headers_conformance,
response_schema_conformance (server-sent events included), negative_data_rejection,
positive_data_acceptance, missing_required_header, unsupported_method,
allow_header_conformance, ignored_auth, object_level_authorization, and in the stateful run
use_after_free and ensure_resource_availability; max_response_time is off, as in `st run`,
until given a limit.

Each test runs twice: with API_KEYS empty, and with a key in API_KEYS that Schemathesis sends
through the document's security scheme (`Authorization: Bearer`). A worker runs beside the
API, one task at a time, so that tasks move on as they would.

`test_every_operation_keeps_to_the_document` runs the examples, coverage and fuzzing phases
(EXAMPLES_PER_OPERATION fuzzed cases per operation, plus the explicit examples and the
coverage phase's own cases); `test_linked_operations_keep_to_the_document` the stateful phase
(STATEFUL_SCENARIOS chains of at most STATEFUL_STEPS calls, along the links Schemathesis infers,
such as a submit's Location to the task's reads, cancel, retry and events).

Some rules of a valid request are beyond what a JSON Schema can say: they hold at a moment (a
run_at within the allowed window), in the world (a callback host's addresses) or against what
the API issued before (a cursor, an Idempotency-Key already used with another body). A
positive case is made to keep them as a client keeps them (`as_a_client_sends`); negative
cases go as generated, and every answer is checked in full.

The file takes 2 to 3.5 minutes on two cores (about half of it fuzzing).
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import settings
from schemathesis import Case

from common.api_keys import new_api_key
from common.settings import Settings
from testkit.processes import free_port, service_process, wait_ready
from testkit.scratch import service_environment

# Each run of either test (one API process) takes up to a minute or so; the default 120 s is
# too near for a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.fuzz, pytest.mark.timeout(300)]

EXAMPLES_PER_OPERATION = 60
STATEFUL_SCENARIOS = 10
STATEFUL_STEPS = 5
CALLBACK_HOST = "127.0.0.1"  # in WEBHOOK_ALLOWED_HOSTS: no DNS, and nothing delivers here


@dataclass(frozen=True)
class RunningApi:
    base_url: str
    headers: dict[str, str] = field(default_factory=dict)  # the API key, when keys are on
    key: str | None = None


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "processing_delay_min_seconds": 0.0,
        "processing_delay_max_seconds": 0.1,
        # Webhooks on, as the document describes callback_url; no sender runs.
        "webhook_secret": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "webhook_allowed_hosts": CALLBACK_HOST,
    }


@pytest.fixture(scope="module")
def worker(direct: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A worker that takes one task at a time: fuzzed tasks may ask for minutes of CPU
    (hash_chain's rounds), and the API under test needs the machine's cores."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {
        **service_environment(direct),
        "WORKER_CONCURRENCY": "1",
        "CPU_POOL_SIZE": "1",
        "WORKER_SHUTDOWN_GRACE_SECONDS": "1",
    }
    with service_process("worker-service", env, log):
        yield


@pytest.fixture(scope="module", params=["keys off", "keys on"])
def api(
    request: pytest.FixtureRequest,
    direct: Settings,
    worker: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningApi]:
    key, pair = new_api_key("fuzz") if request.param == "keys on" else (None, "")
    port = free_port()
    env = {**service_environment(direct), "API_PORT": str(port), "API_KEYS": pair}
    log = tmp_path_factory.mktemp("api") / "api.log"
    with service_process("api-service", env, log):
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, log)
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        yield RunningApi(base_url, headers, key)


@pytest.fixture
def api_schema(api: RunningApi) -> schemathesis.BaseSchema:
    # The key through the document's own security scheme, as `st run` would take it.
    auth = {} if api.key is None else {"auth": {"openapi": {"apiKey": {"bearer": api.key}}}}
    return schemathesis.openapi.from_url(
        f"{api.base_url}/openapi.json", config=schemathesis.Config.from_dict(auth)
    )


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # Schemathesis 4.32's lazy schemas read `item._nodeid`, which pytest 9.2 no longer has.
    request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None)
def test_every_operation_keeps_to_the_document(case: Case[Any], api: RunningApi) -> None:
    as_a_client_sends(case, api)
    case.call_and_validate(**reading_limit(case))


# The tenant's stream never ends by itself and is mostly silent while the fuzzer runs: its
# events are read for half a second (the retry line comes at once), as a client that closes it.
ENDLESS_STREAMS = frozenset({"GET /api/events"})


def reading_limit(case: Case[Any]) -> dict[str, Any]:
    return {"timeout": (10, 0.5)} if case.operation.label in ENDLESS_STREAMS else {}


def as_a_client_sends(case: Case[Any], api: RunningApi) -> None:
    """Make a positive case keep the rules of a valid request that the document cannot state,
    as a client keeps them:

    - an Idempotency-Key is new for each new request (the draft has clients make a unique
      one; the same key with another body is a 422), so the fuzzer's short keys get a prefix;
    - run_at lies between 60 s ago and MAX_DELAY_SECONDS ahead when the request arrives;
    - a callback URL's host resolves to addresses the SSRF guard allows (here one listed in
      WEBHOOK_ALLOWED_HOSTS);
    - a cursor is one the API made for the same filters: taken from their first page.
    """
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if case.operation.label == "POST /api/tasks":
        key = case.headers.get("Idempotency-Key") if case.headers else None
        if key is not None:
            case.headers["Idempotency-Key"] = unique_key(key)
        if isinstance(case.body, dict):
            if isinstance(case.body.get("run_at"), str):
                case.body["run_at"] = datetime.now(UTC).isoformat()
            if isinstance(case.body.get("callback_url"), str):
                case.body["callback_url"] = f"http://{CALLBACK_HOST}:9/tasks"
    elif case.operation.label == "GET /api/tasks" and case.query and "cursor" in case.query:
        filters = {name: value for name, value in case.query.items() if name != "cursor"}
        first = httpx.get(
            f"{api.base_url}/api/tasks",
            params={**filters, "limit": 1},
            headers=api.headers,
            timeout=30,
        )
        cursor = first.json().get("next_cursor") if first.status_code == 200 else None
        if cursor is None:
            del case.query["cursor"]  # one page at most: no cursor is valid for these filters
        else:
            case.query["cursor"] = cursor


_ESCAPE = re.compile(r"\\(.)")


def unique_key(key: str) -> str:
    """`key` with a random prefix, in its own form (bare, or a quoted Structured Field string),
    or the prefix alone where the key is too long to take it."""
    prefix = uuid.uuid4().hex
    quoted = key.startswith('"')
    text = _ESCAPE.sub(r"\1", key[1:-1]) if quoted else key
    if len(prefix) + len(text) > 255:
        return prefix
    return f'"{prefix}{key[1:]}' if quoted else prefix + key


def test_linked_operations_keep_to_the_document(
    api_schema: schemathesis.BaseSchema, api: RunningApi
) -> None:
    class Workflow(api_schema.as_state_machine()):  # type: ignore[misc]  # made at run time
        def before_call(self, case: Case[Any]) -> None:
            as_a_client_sends(case, api)

    Workflow.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            database=None,
        )
    )
