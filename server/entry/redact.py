"""No API key in any log line: the process's log records are redacted as they are made.

What it is: `install_redaction(keys)`, which `packcache serve` calls once, where it configures
logging. It wraps the log record factory, so every record of every logger (uvicorn's access
and error logs, the websockets library's handshake headers at debug level, ours) has each
configured key, and any `Bearer <token>` or `api_key=<token>` value, replaced by `[redacted]`
in its message, its arguments, its exception text and its stack, before any filter, handler or
formatter sees it. What it is not: keeping keys out of responses (no route echoes one).

Invariant: a record carries no key from the moment it exists; installing again replaces the
keys (it never stacks a second wrapper).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

REDACTED = "[redacted]"
# `Bearer <token>` (an Authorization header) and `api_key=<token>` / `"api_key": "<token>"`
# (a query string, a form, JSON), whatever the token: a wrong key is a secret too.
# A key replaced already is left as it is (it was `[redacted]]`).
_TOKENS = re.compile(
    r"""(?i)(\bbearer\s+|\bapi_key["']?\s*[=:]\s*["']?)(?!\[redacted\])[^\s"'&,;)}\]]+"""
)
_FORMATTER = logging.Formatter()


class Redactor:
    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = sorted({k for k in keys if k}, key=len, reverse=True)  # longest first

    def text(self, text: str) -> str:
        for key in self._keys:
            text = text.replace(key, REDACTED)
        return _TOKENS.sub(lambda m: m.group(1) + REDACTED, text)

    def value(self, value: Any) -> Any:
        """An argument of a log call: itself unless its text holds a secret (so `%d` of a
        number still works), else its redacted text."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, int | float):
            return value
        shown = str(value)
        cleaned = self.text(shown)
        return value if cleaned == shown else cleaned

    def record(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg = self.value(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {k: self.value(v) for k, v in record.args.items()}
        elif record.args:
            record.args = tuple(self.value(a) for a in record.args)
        if record.exc_info and not record.exc_text:  # formatters use exc_text once it is set
            record.exc_text = self.text(_FORMATTER.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = self.text(record.stack_info)
        return record


class _RedactingFactory:
    def __init__(self, base: Callable[..., logging.LogRecord], redactor: Redactor) -> None:
        self.base, self.redactor = base, redactor

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        return self.redactor.record(self.base(*args, **kwargs))


def install_redaction(keys: Sequence[str]) -> None:
    """Redact `keys` (and any Bearer or api_key token) from every log record of the process."""
    current = logging.getLogRecordFactory()
    base = current.base if isinstance(current, _RedactingFactory) else current
    logging.setLogRecordFactory(_RedactingFactory(base, Redactor(keys)))
