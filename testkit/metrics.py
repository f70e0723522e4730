"""Reading Prometheus's text format in tests."""

from __future__ import annotations

import re


def samples(text: str, name: str) -> dict[str, float]:
    """`name`'s samples in an exposition, by their label text (`{a="b"}`, or "" for none)."""
    found: dict[str, float] = {}
    for match in re.finditer(rf"^{re.escape(name)}(\{{.*\}})? (\S+)$", text, re.M):
        found[match.group(1) or ""] = float(match.group(2))
    return found


def label_values(text: str) -> set[str]:
    """Every label value in an exposition."""
    return set(re.findall(r'="([^"]*)"', text))
