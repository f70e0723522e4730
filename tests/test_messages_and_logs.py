from __future__ import annotations

import json
import logging
import uuid

import pytest

from common.errors import InvalidTaskMessage
from common.logs import JsonFormatter, TextFormatter
from common.messages import TaskMessage, decode_task_message, is_task_id

pytestmark = pytest.mark.unit


def test_message_round_trips_with_unicode_and_metadata() -> None:
    message = TaskMessage(str(uuid.uuid4()), "Résumé 😀", "long\ntext", {"a": [1, {"b": None}]})
    assert decode_task_message(message.encode()) == message
    assert json.loads(message.encode()).keys() == {
        "task_id",
        "title",
        "description",
        "metadata",
        "type",
        "payload",
        "timeout_seconds",
    }
    typed = TaskMessage(str(uuid.uuid4()), "t", None, None, "hash_chain", {"rounds": 5}, 30)
    assert decode_task_message(typed.encode()) == typed


def test_a_message_from_before_task_types_is_a_simulated_task() -> None:
    task_id = str(uuid.uuid4())
    body = json.dumps({"task_id": task_id, "title": "t", "description": "d", "metadata": None})
    message = decode_task_message(body.encode())
    assert (message.type, message.payload, message.timeout_seconds) == ("simulated", None, None)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe",
        b"nope",
        b"[]",
        b'"x"',
        b'{"task_id": null}',
        b'{"task_id": "123"}',
        b'{"task_id": "%s", "type": 5}' % str(uuid.uuid4()).encode(),
        b'{"task_id": "%s", "type": ""}' % str(uuid.uuid4()).encode(),
        b'{"task_id": "%s", "payload": [1]}' % str(uuid.uuid4()).encode(),
        b'{"task_id": "%s", "timeout_seconds": 0}' % str(uuid.uuid4()).encode(),
        b'{"task_id": "%s", "timeout_seconds": true}' % str(uuid.uuid4()).encode(),
    ],
)
def test_undecodable_messages_raise(body: bytes) -> None:
    with pytest.raises(InvalidTaskMessage):
        decode_task_message(body)


def test_task_id_must_be_a_canonical_uuid() -> None:
    value = str(uuid.uuid4())
    assert is_task_id(value)
    assert is_task_id(value.upper())
    assert not is_task_id(value.replace("-", ""))
    assert not is_task_id("{" + value[1:-1] + "}")
    assert not is_task_id(None)


def _record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "worker", "levelname": "INFO", "msg": "task claimed"})
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_time_level_service_event_and_task_id() -> None:
    line = JsonFormatter("worker").format(_record(task_id="abc"))
    entry = json.loads(line)
    assert entry["event"] == "task claimed"
    assert entry["service"] == "worker"
    assert entry["level"] == "INFO"
    assert entry["task_id"] == "abc"
    assert entry["time"].endswith("+00:00")


def test_text_lines_are_readable() -> None:
    line = TextFormatter("api").format(_record(task_id="abc"))
    assert " INFO " in line
    assert line.endswith("api task claimed task_id=abc")
