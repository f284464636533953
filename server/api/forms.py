"""Strict multipart forms: each field once, text fields valid in the form's charset (UTF-8).

What it is: `StrictFormRoute`, the route class of `/v1/videos`, whose requests parse a
multipart body with `StrictMultiPartParser`: Starlette's parser, except that a field sent twice
(`input_reference` included), a text field sent empty or one whose bytes are not valid text is
refused with a 400 naming the field, where Starlette would keep the last value or decode the
bytes as Latin-1 and FastAPI would take an empty field for a missing one (its default). A
duplicate is refused as soon as its part ends, before the rest of the body is read. What it is
not: validation of values (`schemas.py`) or the body size limit (`security.py`).

How: FastAPI's documented hook for a custom request class is a route class; the request class
overrides Starlette's form parsing for multipart bodies only and leaves every other body to it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from contextlib import aclosing
from typing import Any

from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response

from server.errors import InvalidRequest


class _FieldError(MultiPartException):
    """A field the form must not have; Starlette's parser closes its spooled files on it."""

    def __init__(self, error: InvalidRequest) -> None:
        super().__init__(error.message)
        self.error = error


class StrictMultiPartParser(MultiPartParser):
    def on_part_end(self) -> None:
        part = self._current_part
        name = part.field_name
        if any(seen == name for seen, _ in self.items):
            raise _FieldError(InvalidRequest(f"{name}: sent more than once", param=name))
        if part.file is None and not part.data:
            message = f"{name}: sent empty; leave the field out to use its default"
            raise _FieldError(InvalidRequest(message, param=name))
        if part.file is None:
            try:
                part.data.decode(self._charset)
            except (UnicodeDecodeError, LookupError) as e:
                message = f"{name}: not valid {self._charset or 'utf-8'} text"
                raise _FieldError(InvalidRequest(message, param=name)) from e
        super().on_part_end()


class StrictFormRequest(Request):
    async def _get_form(
        self,
        *,
        max_files: int | float = 1000,
        max_fields: int | float = 1000,
        max_part_size: int = 1024 * 1024,
    ) -> FormData:
        content_type = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if self._form is None and content_type == "multipart/form-data":
            try:
                async with aclosing(self.stream()) as stream:
                    parser = StrictMultiPartParser(
                        self.headers,
                        stream,
                        max_files=max_files,
                        max_fields=max_fields,
                        max_part_size=max_part_size,
                    )
                    self._form = await parser.parse()
            except MultiPartException as e:  # FastAPI passes an HTTPException on unchanged
                cause = e.error if isinstance(e, _FieldError) else InvalidRequest(e.message)
                raise HTTPException(400, e.message) from cause
        return await super()._get_form(
            max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
        )


class StrictFormRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handle(StrictFormRequest(request.scope, request.receive))

        return strict
