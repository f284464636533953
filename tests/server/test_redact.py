"""Log redaction (`server/entry/redact.py`): keys and tokens become `[redacted]`, once."""

from __future__ import annotations

import pytest

from server.entry.redact import Redactor

KEY = "sk-test-0123456789"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            f'"WebSocket /v1/videos/stream?api_key={KEY}" [accepted]',
            '"WebSocket /v1/videos/stream?api_key=[redacted]" [accepted]',
        ),
        (f"authorization: Bearer {KEY}", "authorization: Bearer [redacted]"),
        ("GET /v1/videos?api_key=sk-wrong&limit=1", "GET /v1/videos?api_key=[redacted]&limit=1"),
        (f'{{"api_key": "{KEY}x"}}', '{"api_key": "[redacted]x"}'),
    ],
    ids=["configured-key-in-url", "configured-key-as-bearer", "other-token", "key-in-json"],
)
def test_a_secret_is_replaced_once(line: str, expected: str) -> None:
    assert Redactor([KEY]).text(line) == expected
