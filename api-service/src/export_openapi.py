"""`python export_openapi.py` (or `make openapi`): write the API's OpenAPI document to
docs/openapi.json. A test fails when the file and the app drift apart."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

from common.settings import load_settings
from main import create_app

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
# The published document describes the whole API, `callback_url` included, as a server with
# webhooks on serves it; a server without WEBHOOK_SECRET serves its own, which refuses one.
# Only the document is made with this secret: it signs nothing.
_WEBHOOKS_ON = "whsec_" + base64.b64encode(bytes(32)).decode()


def render() -> str:
    document: dict[str, Any] = create_app(load_settings(webhook_secret=_WEBHOOKS_ON)).openapi()
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    DOCUMENT.write_text(render())
    sys.stdout.write(f"wrote {DOCUMENT}\n")


if __name__ == "__main__":
    main()
