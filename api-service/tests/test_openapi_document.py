from __future__ import annotations

import pytest

from export_openapi import DOCUMENT, render

pytestmark = pytest.mark.unit


@pytest.mark.skipif(not DOCUMENT.exists(), reason="docs/ is not part of the container image")
def test_docs_openapi_json_matches_the_app() -> None:
    assert DOCUMENT.read_text() == render(), "docs/openapi.json is stale: run `make openapi`"
