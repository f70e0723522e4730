"""The webhook code's pure parts: the SSRF guard's verdict on an address, what an answer
means (verdict_of, Retry-After), the retry schedule and the signatures."""

from __future__ import annotations

import base64
import ipaddress
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from common.settings import Settings
from services.webhooks.delivery import Verdict, retry_after_seconds, verdict_of
from services.webhooks.sender import RetryPolicy
from services.webhooks.signing import Signer
from services.webhooks.targets import Target, TargetRefused, address_problem, parse_target

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("127.0.0.1", "a loopback address"),
        ("127.255.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "resolves to 127.0.0.1, a loopback address"),
        ("10.0.0.1", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),
        ("0.0.0.0", "resolves to 0.0.0.0"),
        ("::", "resolves to ::"),
        ("100.64.0.1", "not a public address"),  # shared (carrier-grade NAT)
        ("224.0.0.1", "not a public address"),  # multicast
        ("ff02::1", "not a public address"),
        ("169.254.169.254", "a link-local or metadata address"),
        ("fe80::1", "a link-local or metadata address"),
        ("::ffff:169.254.169.254", "resolves to 169.254.169.254, a link-local or metadata"),
        ("fd00:ec2::254", "a link-local or metadata address"),
        ("100.100.100.200", "a link-local or metadata address"),
    ],
)
def test_address_problem_of_an_unlisted_host(address: str, problem: str | None) -> None:
    found = address_problem(ipaddress.ip_address(address), "hooks.example.com", frozenset())
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "::1", "10.0.0.1", "192.168.1.1", "100.64.0.1", "::ffff:10.0.0.1"]
)
def test_a_listed_host_may_go_to_a_loopback_or_private_address(address: str) -> None:
    allowed = frozenset({"hooks.internal"})
    assert address_problem(ipaddress.ip_address(address), "hooks.internal", allowed) is None
    # Only the host listed: another name resolving to the same address is still refused.
    assert address_problem(ipaddress.ip_address(address), "other.internal", allowed) is not None


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "169.254.0.1", "fe80::1", "fd00:ec2::254", "100.100.100.200"]
)
def test_a_link_local_or_metadata_address_is_refused_even_when_listed(address: str) -> None:
    problem = address_problem(ipaddress.ip_address(address), address, frozenset({address}))
    assert problem is not None
    assert "link-local or metadata" in problem


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://Hooks.Example.COM/tasks", Target("http", "hooks.example.com", 80)),
        ("https://hooks.example.com/tasks", Target("https", "hooks.example.com", 443)),
        ("https://[2001:db8::1]:8443/", Target("https", "2001:db8::1", 8443)),
    ],
)
def test_parse_target(url: str, target: Target) -> None:
    assert parse_target(url) == target


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/",
        "javascript:alert(1)",
        "http://",
        "http://u:p@hooks.example.com/",
        "http://hooks.example.com:0x50/",
        "http://hooks.example.com/\tx",
        "http://hooks.example.com/" + "a" * 2048,
    ],
)
def test_parse_target_refuses(url: str) -> None:
    with pytest.raises(TargetRefused):
        parse_target(url)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Tue, 01 Dec 2026 10:00:30 GMT", 30.0),
        ("Tue, 01 Dec 2026 10:00:30 -0000", 30.0),  # no zone: taken as UTC
        ("Tue, 01 Dec 2026 09:59:00 GMT", 0.0),  # already past
        (None, None),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
    ],
)
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, NOW) == seconds


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_a_2xx_is_delivered(status: int) -> None:
    attempt = verdict_of(status, {}, NOW)
    assert (attempt.verdict, attempt.status_code, attempt.error) == (
        Verdict.DELIVERED,
        status,
        None,
    )


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (500, {}, None),
        (502, {}, None),
        (599, {}, None),
        (429, {}, None),
        (429, {"retry-after": "30"}, 30.0),
        (503, {"retry-after": "Tue, 01 Dec 2026 10:01:00 GMT"}, 60.0),
        (500, {"retry-after": "30"}, None),  # only a 429's or a 503's counts
    ],
)
def test_a_5xx_or_429_is_retried(
    status: int, headers: dict[str, str], retry_after: float | None
) -> None:
    attempt = verdict_of(status, headers, NOW)
    assert attempt.verdict is Verdict.RETRY
    assert attempt.status_code == status
    assert attempt.retry_after == retry_after
    assert attempt.error == f"the receiver answered {status}"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 410, 413, 422, 451])
def test_another_4xx_fails_at_once(status: int) -> None:
    attempt = verdict_of(status, {"retry-after": "5"}, NOW)
    assert (attempt.verdict, attempt.error, attempt.retry_after) == (
        Verdict.FAILED,
        f"the receiver answered {status}",
        None,
    )


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_fails_and_says_it_is_not_followed(status: int) -> None:
    attempt = verdict_of(status, {"location": "http://169.254.169.254/"}, NOW)
    assert attempt.verdict is Verdict.FAILED
    assert attempt.error == f"the receiver answered {status} (redirects are not followed)"


def test_retry_delays_double_from_the_base_up_to_the_cap() -> None:
    policy = RetryPolicy(base_seconds=5, max_seconds=60, max_attempts=10)
    delays = [policy.delay(n, None, jitter=0.0) for n in range(1, 7)]
    assert delays == [5, 10, 20, 40, 60, 60]
    assert policy.delay(1_000, None, jitter=0.0) == 60  # no overflow far past the cap


def test_retry_jitter_adds_up_to_a_fifth() -> None:
    policy = RetryPolicy(base_seconds=10, max_seconds=1_000, max_attempts=10)
    assert policy.delay(2, None, jitter=1.0) == pytest.approx(24.0)
    assert policy.delay(2, None, jitter=0.5) == pytest.approx(22.0)


def test_a_retry_after_replaces_the_backoff_within_the_cap() -> None:
    policy = RetryPolicy(base_seconds=5, max_seconds=600, max_attempts=10)
    assert policy.delay(1, 120.0, jitter=1.0) == 120.0  # no jitter on the receiver's word
    assert policy.delay(7, 0.0, jitter=1.0) == 0.0
    assert policy.delay(1, 86_400.0, jitter=0.0) == 600


def test_the_default_schedule_spans_at_least_a_day() -> None:
    fields = Settings.model_fields
    policy = RetryPolicy(
        base_seconds=fields["webhook_retry_base_seconds"].default,
        max_seconds=fields["webhook_retry_max_seconds"].default,
        max_attempts=fields["webhook_max_attempts"].default,
    )
    # The pauses before attempts 2 .. WEBHOOK_MAX_ATTEMPTS, without jitter (which only adds).
    pauses = [policy.delay(n, None, jitter=0.0) for n in range(1, policy.max_attempts)]
    assert sum(pauses) >= 86_400, sum(pauses)
    assert max(pauses) <= policy.max_seconds


def test_headers_carry_a_signature_standard_webhooks_verifies() -> None:
    secret = new_secret()
    body = '{"task_id": "t", "status": "COMPLETED"}'
    headers = Signer(secret).headers("msg_1", body, NOW + timedelta(microseconds=700))
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(int(NOW.timestamp()))
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]
    webhook = Webhook(secret)
    # verify() checks the timestamp against now: sign now for that part.
    fresh = Signer(secret).headers("msg_1", body, datetime.now(UTC))
    assert webhook.verify(body, fresh) == {"task_id": "t", "status": "COMPLETED"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, fresh)
    with pytest.raises(WebhookVerificationError):
        webhook.verify(body.replace("COMPLETED", "FAILED"), fresh)


def test_while_rotating_each_secret_verifies() -> None:
    current, previous = new_secret(), new_secret()
    body = '{"task_id": "t"}'
    headers = Signer(current, previous).headers("msg_2", body, datetime.now(UTC))
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(signature.startswith("v1,") for signature in signatures)
    for secret in (current, previous):
        assert Webhook(secret).verify(body, headers) == {"task_id": "t"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
