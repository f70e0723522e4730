"""Standard Webhooks signatures, made with the `standardwebhooks` package itself (the one its
receivers verify with): `v1,<base64 HMAC-SHA256 of id.timestamp.body>`, one per secret while a
secret is rotated (WEBHOOK_SECRET, then WEBHOOK_SECRET_PREVIOUS), space-separated."""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

USER_AGENT = "task-service-webhooks/1.0"


class Signer:
    def __init__(self, secret: str, previous: str | None = None) -> None:
        self._signers = [Webhook(secret)] + ([Webhook(previous)] if previous else [])

    def headers(self, webhook_id: str, body: str, at: datetime) -> dict[str, str]:
        """The headers of one attempt: its id (the same on every attempt of a delivery), its
        time (this attempt's, whole seconds) and the body's signatures."""
        at = at.astimezone(UTC).replace(microsecond=0)
        signatures = " ".join(signer.sign(webhook_id, at, body) for signer in self._signers)
        return {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signatures,
        }
