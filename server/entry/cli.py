"""The `packcache` command: `packcache serve [--flag ...]`, one function per subcommand.

What it is: an argparse parser whose `serve` flags are generated from `Settings` (name, type,
default and help text), so every setting is a flag and `--help` documents all of them; flags
given on the command line override `PACKCACHE_*` variables. A new subcommand is one function
and one `COMMANDS` entry. What it is not: the server (see `main.py`).

Invariant: only flags the user typed reach `Settings`, so unset flags never mask the environment.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import Any, Literal, NoReturn, get_args, get_origin

import uvicorn
from pydantic.fields import FieldInfo

from server.entry.check_model import add_check_arguments, run_check_model
from server.entry.generate_command import add_generate_arguments, run_generate
from server.entry.redact import install_redaction
from server.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _flag_help(name: str, field: FieldInfo, choices: tuple[Any, ...] | None) -> str:
    default = field.get_default(call_default_factory=True)
    shown = str(default) if isinstance(default, PurePath) else repr(default)
    among = f"; one of {', '.join(map(str, choices))}" if choices else ""
    return f"{field.description or ''}{among} [env PACKCACHE_{name.upper()}; default {shown}]"


def _add_setting(parser: argparse.ArgumentParser, name: str, field: FieldInfo) -> None:
    flag = "--" + name.replace("_", "-")
    kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
    annotation = field.annotation
    choices = get_args(annotation) if get_origin(annotation) is Literal else None
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs.update(metavar=name.upper(), choices=choices)
    parser.add_argument(flag, help=_flag_help(name, field, choices), **kwargs)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        _add_setting(parser, name, field)


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """uvicorn's side of the settings: the one place they are turned into its options."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # h11 bounds the request line and headers while it reads them (httptools has no bound)
        http="h11",
        h11_max_incomplete_event_size=settings.max_header_bytes,
        # Any message, after inflating (permessage-deflate): the base64 image + JSON. The route
        # checks its own, smaller limit on the first message and answers with an `error`.
        ws_max_size=2 * settings.max_upload_bytes + (1 << 20),
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
    )
    logging.getLogger("uvicorn.error").addFilter(_bad_utf8_is_a_warning)  # once: same object
    return config


def serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    from server.api.main import create_app
    from server.entry import drain  # imports torch and the app only for this command

    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    settings = Settings(**overrides)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    install_redaction(settings.api_keys)  # every record of every logger, uvicorn's included
    app = create_app(settings)
    config = uvicorn_config(app, settings)
    logging.getLogger("uvicorn.error").addFilter(_no_frames)  # set after uvicorn's own config
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    print(
        f"packcache serve: {settings.model} | page {base}/ | API {base}/v1 (docs {base}/docs) | "
        f"ready when {base}/ready answers 200",
        file=sys.stderr,
        flush=True,
    )
    return drain.serve(config, app.state.runtime, settings.drain_timeout_s)  # SIGTERM drains


BAD_UTF8 = "Invalid UTF-8 sequence received from client."  # uvicorn's words, with a traceback


def _bad_utf8_is_a_warning(record: logging.LogRecord) -> bool:
    """A client's invalid UTF-8 (uvicorn closes with 1007) is the client's error: a warning
    line, not an ERROR with a traceback of the server."""
    if record.msg == BAD_UTF8:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        record.msg = "a websocket client sent invalid UTF-8 in a text message: closed with 1007"
    return True


def _no_frames(record: logging.LogRecord) -> bool:
    """At debug level the websockets library logs every frame with its text (through uvicorn's
    logger): a client's image among it. Frames are never logged."""
    return record.msg not in ("< %s", "> %s")


COMMANDS: list[Command] = [
    ("serve", add_serve_arguments, serve),
    ("generate", add_generate_arguments, run_generate),
    ("check-model", add_check_arguments, run_check_model),
]


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="packcache", description="PackCache: Lumos-1 i2v")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser
    )
    for name, add_arguments, run in COMMANDS:
        command = sub.add_parser(name, help=run.__doc__, description=run.__doc__)
        add_arguments(command)
        command.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
