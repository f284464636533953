"""The page's routes without a browser or a model: what is served, and what is not.

The app is built but never started (no lifespan), so these need no model and run in
milliseconds: `/ui/config` reads settings only.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.api.main import create_app
from server.api.routes.ui import STATIC
from server.settings import Settings


def client(tmp_path: Path, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(data_dir=tmp_path, **settings)))


def test_page_and_files(tmp_path: Path) -> None:
    c = client(tmp_path)
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name in re.findall(r'(?:src|href)="/static/([^"]+)"', page.text):
        assert c.get(f"/static/{name}").status_code == 200, name
    assert c.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    sample = c.get("/static/sample.png")
    assert sample.headers["content-type"] == "image/png" and len(sample.content) < 50_000
    assert Image.open(io.BytesIO(sample.content)).size == (256, 160)


def test_nothing_is_loaded_from_elsewhere() -> None:
    """The page works offline: no file names an absolute URL (a CDN, a font service)."""
    for path in STATIC.iterdir():
        if path.suffix in (".html", ".js", ".css"):
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", path.read_text()), path


@pytest.mark.parametrize(
    "name", ["../main.py", "..%2Fmain.py", "ui.py", "nope.js", ".hidden.js", "INDEX.HTML"]
)
def test_only_static_files_are_served(tmp_path: Path, name: str) -> None:
    assert client(tmp_path).get(f"/static/{name}").status_code == 404


@pytest.mark.parametrize("keys", [[], ["secret-key"]])
def test_config_says_whether_a_key_is_needed(tmp_path: Path, keys: list[str]) -> None:
    c = client(tmp_path, api_keys=keys, max_upload_bytes=12345, default_latent_frames=4)
    response = c.get("/ui/config")  # public, also when keys are configured
    assert response.status_code == 200
    config = response.json()
    assert config["api_key_required"] is bool(keys)
    assert "secret-key" not in response.text
    assert config["max_upload_bytes"] == 12345 and config["default_latent_frames"] == 4
    assert "/ui/config" not in c.get("/openapi.json").json()["paths"]


def test_config_shows_the_default_policy_as_the_registry_sets_it(tmp_path: Path) -> None:
    """A checkpoint folder has no card: the page shows the paper's packcache, every knob."""
    c = client(tmp_path, model=str(tmp_path), default_policy="packcache")
    config = c.get("/ui/config").json()
    assert config["default_policy"] == "packcache"
    params = config["default_policy_params"]
    assert (params["window"], params["rho"], params["budget"]) == (3, 0.5, 1.0)
    assert (params["drop_masked"], params["selector"], params["rebase"]) == (
        False,
        "uniform",
        True,
    )
