"""Tenants per API key: a job belongs to the key that made it; other keys get 404 for it and
never see it listed; an admin key reaches every job; the database holds a hash, not the key.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from websockets.sync.client import connect

from server.api.security import owner_of
from tests.server.conftest import TINY, LiveServer, png_bytes
from tests.server.test_stream import read_until, request

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")
KEY_A = "sk-tenant-a-" + secrets.token_hex(16)
KEY_B = "sk-tenant-b-" + secrets.token_hex(16)
ADMIN = "sk-admin-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("tenants"), api_keys=[KEY_A, KEY_B], admin_api_keys=[ADMIN]
    ).start()
    yield live
    live.stop()


def client(live: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create(live: LiveServer, key: str, **fields: Any) -> str:
    """A finished tiny job made with `key`, by the official client; its id."""
    video = client(live, key).videos.create(
        model=live.settings.model_name,
        prompt="a red square drifting",
        input_reference=("in.png", png_bytes(), "image/png"),
        size="64x64",
        extra_body={k: v for k, v in TINY.items() if k != "size"} | fields,
    )
    while video.status in ("queued", "in_progress"):
        time.sleep(0.05)
        video = client(live, key).videos.retrieve(video.id)
    assert video.status == "completed", video.error
    return video.id


def listed(live: LiveServer, key: str) -> set[str]:
    return {v.id for v in client(live, key).videos.list(limit=100).data}


def test_other_keys_get_404(tenants: LiveServer) -> None:
    a_job = create(tenants, KEY_A)
    b = client(tenants, KEY_B)
    with pytest.raises(openai.NotFoundError):
        b.videos.retrieve(a_job)
    for variant in ("video", "thumbnail"):
        with pytest.raises(openai.NotFoundError):
            b.videos.download_content(a_job, variant=variant)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        b.videos.delete(a_job)
    # Exactly what a made-up id gets: existence is not leaked.
    made_up = "video_" + "0" * 32
    paths = ("/v1/videos/{}", "/v1/videos/{}/content", "/v1/videos/{}/content?variant=thumbnail")
    for path in paths:
        theirs = tenants.client.get(path.format(a_job), headers=bearer(KEY_B))
        missing = tenants.client.get(path.format(made_up), headers=bearer(KEY_B))
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"]
    # The job survived B's delete, and A still reads and downloads it.
    a = client(tenants, KEY_A)
    assert a.videos.retrieve(a_job).status == "completed"
    assert a.videos.download_content(a_job, variant="thumbnail").read()[:2] == b"\xff\xd8"


def test_lists_hold_own_jobs_admin_sees_all(tenants: LiveServer) -> None:
    a_job, b_job = create(tenants, KEY_A), create(tenants, KEY_B)
    assert a_job in listed(tenants, KEY_A) and b_job not in listed(tenants, KEY_A)
    assert b_job in listed(tenants, KEY_B) and a_job not in listed(tenants, KEY_B)
    assert {a_job, b_job} <= listed(tenants, ADMIN)
    # Paging after another key's id: the same error as after an unknown id.
    theirs = tenants.client.get(f"/v1/videos?after={a_job}", headers=bearer(KEY_B))
    unknown = tenants.client.get(f"/v1/videos?after=video_{'0' * 32}", headers=bearer(KEY_B))
    assert theirs.status_code == unknown.status_code == 400
    assert theirs.json()["error"]["param"] == unknown.json()["error"]["param"] == "after"
    assert tenants.client.get(f"/v1/videos?after={a_job}", headers=bearer(ADMIN)).status_code == 200
    # The admin reads, downloads and deletes any key's job.
    admin = client(tenants, ADMIN)
    assert admin.videos.retrieve(b_job).id == b_job
    assert admin.videos.download_content(b_job).read()
    assert admin.videos.delete(b_job).deleted
    with pytest.raises(openai.NotFoundError):
        client(tenants, KEY_B).videos.retrieve(b_job)


def test_stream_jobs_belong_to_their_key(tenants: LiveServer) -> None:
    with connect(tenants.ws_url, additional_headers=bearer(KEY_B)) as ws:
        ws.send(request(latent_frames=2, steps=1))
        video_id = read_until(ws, "completed")["id"]
    assert video_id in listed(tenants, KEY_B) and video_id not in listed(tenants, KEY_A)
    with connect(f"{tenants.ws_url}?api_key={KEY_A}") as ws:  # as a browser sends it
        ws.send(request(latent_frames=2, steps=1))
        a_stream = json.loads(ws.recv(timeout=30))["id"]
        read_until(ws, "completed")
    assert a_stream in listed(tenants, KEY_A) and a_stream not in listed(tenants, KEY_B)
    assert tenants.client.get(f"/v1/videos/{video_id}", headers=bearer(KEY_A)).status_code == 404


def test_database_holds_a_hash_not_the_key(tenants: LiveServer) -> None:
    a_job = create(tenants, KEY_A)
    db_path = tenants.settings.data_dir / "jobs.sqlite3"
    with sqlite3.connect(db_path) as db:
        (owner,) = db.execute("SELECT owner FROM jobs WHERE id = ?", (a_job,)).fetchone()
    assert owner == owner_of(KEY_A) and len(owner) == 32 and KEY_A not in owner
    assert "owner" not in client(tenants, KEY_A).videos.retrieve(a_job).model_dump()
    # Neither the database nor its write-ahead log holds any key, in any part.
    files = list(db_path.parent.glob("jobs.sqlite3*"))
    assert db_path in files
    stored = b"".join(f.read_bytes() for f in files)
    assert owner.encode() in stored
    for key in (KEY_A, KEY_B, ADMIN):
        secret = key.rsplit("-", 1)[1].encode()
        assert not any(secret[i : i + 12] in stored for i in range(len(secret) - 11)), key
