"""Images made for `response_format=url`: one file each, per owner, kept `retention_s`.

What it is: `ImageFiles`, `<root>/<owner>/<image id>.<png|jpeg|webp>`, written whole (aside,
then renamed), found only within the caller's scope, and deleted once older than the
retention (`expire`, from the runtime's sweep). What it is not: a job store: an image is made
within its request (`POST /v1/images/generations` answers when it is done), so nothing about
it needs resuming; images sent back as `b64_json` are never written.

Invariant: an image id is found only under its owner's folder (an admin's scope: any owner's),
so another key's image answers exactly as a missing one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

IMAGE_ID = re.compile(r"^img_[0-9a-f]{32}$")
EXTENSIONS = ("png", "jpeg", "webp")


class ImageFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, owner: str, image_id: str, ext: str, data: bytes) -> None:
        assert IMAGE_ID.match(image_id) and ext in EXTENSIONS, "a name this module made"
        folder = self.root / owner
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{image_id}.{ext}"
        part = final.with_suffix(".part")
        part.write_bytes(data)
        os.replace(part, final)

    def find(self, image_id: str, scope: str | None) -> Path | None:
        """The file of `image_id` if `scope` (an owner; None: any) reaches it."""
        if not IMAGE_ID.match(image_id) or not self.root.is_dir():
            return None
        owners = [self.root / scope] if scope is not None else self.root.iterdir()
        for folder in owners:
            for ext in EXTENSIONS:
                path = folder / f"{image_id}.{ext}"
                if path.is_file():
                    return path
        return None

    def expire(self, before: float) -> int:
        """Delete the images written before `before` (a `time.time()`); returns how many."""
        if not self.root.is_dir():
            return 0
        gone = 0
        for folder in self.root.iterdir():
            for path in folder.iterdir() if folder.is_dir() else ():
                try:
                    if path.stat().st_mtime < before:
                        path.unlink()
                        gone += 1
                except FileNotFoundError:  # deleted meanwhile
                    continue
        return gone
