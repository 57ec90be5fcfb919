from __future__ import annotations

import threading
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from db.models import Chunk
from rag.chunking import chunk_document
from server.services import documents as documents_module
from tests.conftest import TestUser, create_session, register_user
from tests.context.conftest import AppClient, container_of_app

GUIDE = """# Parley operations guide

## Backups

The nightly backup runs at 02:30 UTC and is kept for fourteen days.

## Rotation

Signing keys rotate every ninety days; the old key stays valid for one more week.
"""


async def upload_file(
    client: httpx.AsyncClient,
    user: TestUser,
    session_id: str,
    data: bytes,
    filename: str = "guide.md",
) -> httpx.Response:
    return await client.post(
        f"/v1/sessions/{session_id}/documents",
        files={"file": (filename, data, "text/markdown")},
        headers=user.headers,
    )


async def documents_of(client: httpx.AsyncClient, user: TestUser, session_id: str) -> list:
    response = await client.get(f"/v1/sessions/{session_id}/documents", headers=user.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["documents"])


async def chunk_rows(client: httpx.AsyncClient, session_id: str) -> int:
    database = container_of_app(client).database
    query = select(func.count()).select_from(Chunk).where(Chunk.session_id == uuid.UUID(session_id))
    async with database.transaction() as session:
        return int((await session.execute(query)).scalar_one())


async def test_a_markdown_file_uploads_as_multipart_and_is_chunked(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)

    response = await upload_file(client, user, session_id, GUIDE.encode(), "ops/guide.md")

    assert response.status_code == 201, response.text
    body = response.json()["data"]
    assert set(body) == {"id", "title", "chunks", "created_at"}
    assert body["title"] == "guide.md"
    assert body["chunks"] == len(chunk_document(GUIDE)) == await chunk_rows(client, session_id)


async def test_a_json_document_uploads_with_its_title(client: httpx.AsyncClient) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    content = "\n\n".join(f"Paragraph {n}: " + "word " * 200 for n in range(6))

    response = await client.post(
        f"/v1/sessions/{session_id}/documents",
        json={"title": "Notes", "content": content},
        headers=user.headers,
    )

    assert response.status_code == 201, response.text
    body = response.json()["data"]
    assert body["title"] == "Notes"
    assert body["chunks"] == len(chunk_document(content)) > 1
    [listed] = await documents_of(client, user, session_id)
    assert (listed["id"], listed["title"], listed["chunks"]) == (
        body["id"],
        "Notes",
        body["chunks"],
    )
    assert listed["uploaded_by"] == user.id


async def test_deleting_a_document_removes_it_and_its_chunks(client: httpx.AsyncClient) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    created = (await upload_file(client, user, session_id, GUIDE.encode())).json()["data"]

    response = await client.delete(
        f"/v1/sessions/{session_id}/documents/{created['id']}", headers=user.headers
    )

    assert response.status_code == 200
    assert await documents_of(client, user, session_id) == []
    assert await chunk_rows(client, session_id) == 0
    retriever = container_of_app(client).retriever
    found = await retriever.retrieve(uuid.UUID(session_id), "nightly backup", budget_tokens=500)
    assert found == []


async def test_the_sqlite_full_text_index_stays_consistent_after_a_delete(
    client: httpx.AsyncClient, backend: str
) -> None:
    if backend != "sqlite":
        return  # PostgreSQL's GIN index is maintained by the database itself
    user = await register_user(client)
    session_id = await create_session(client, user)
    first = (await upload_file(client, user, session_id, GUIDE.encode())).json()["data"]
    await upload_file(client, user, session_id, b"Another file about backups.", "b.txt")

    await client.delete(f"/v1/sessions/{session_id}/documents/{first['id']}", headers=user.headers)

    database = container_of_app(client).database
    async with database.transaction() as session:
        # Raises when the FTS5 index disagrees with the chunks table.
        await session.execute(text("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')"))
        hits = await session.execute(
            text("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'backup'")
        )
        assert hits.scalar_one() == 1


async def test_binary_and_empty_files_are_refused_and_nothing_is_stored(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)

    binary = await upload_file(client, user, session_id, b"\x89PNG\r\n\x1a\n\x00\x00\x00", "a.png")
    invalid = await upload_file(client, user, session_id, b"caf\xe9 latin-1", "a.txt")
    empty = await upload_file(client, user, session_id, b"  \n\n ", "a.txt")

    assert [r.status_code for r in (binary, invalid, empty)] == [400, 400, 400]
    assert "binary" in binary.json()["error"]["message"]
    assert "UTF-8" in invalid.json()["error"]["message"]
    assert "empty" in empty.json()["error"]["message"]
    assert await documents_of(client, user, session_id) == []
    assert await chunk_rows(client, session_id) == 0


async def test_an_oversize_document_is_too_large_and_nothing_is_stored(
    app_with: AppClient,
) -> None:
    async with app_with(max_document_bytes=2048) as client:
        user = await register_user(client)
        session_id = await create_session(client, user)

        as_file = await upload_file(client, user, session_id, b"a" * 3000)
        as_json = await client.post(
            f"/v1/sessions/{session_id}/documents",
            json={"title": "big", "content": "b" * 3000},
            headers=user.headers,
        )

        assert as_file.status_code == as_json.status_code == 413
        assert as_file.json()["error"]["code"] == "too_large"
        assert await documents_of(client, user, session_id) == []


async def test_a_multipart_body_without_a_file_part_is_a_bad_request(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)

    response = await client.post(
        f"/v1/sessions/{session_id}/documents",
        data={"title": "x"},
        files={"other": ("a", b"b")},
        headers=user.headers,
    )

    assert response.status_code == 400
    assert "file" in response.json()["error"]["message"]


async def test_another_users_session_is_not_found_for_every_document_call(
    client: httpx.AsyncClient,
) -> None:
    ada, eve = await register_user(client, "Ada"), await register_user(client, "Eve")
    session_id = await create_session(client, ada)
    created = (await upload_file(client, ada, session_id, GUIDE.encode())).json()["data"]

    upload = await upload_file(client, eve, session_id, b"mine now")
    listing = await client.get(f"/v1/sessions/{session_id}/documents", headers=eve.headers)
    deletion = await client.delete(
        f"/v1/sessions/{session_id}/documents/{created['id']}", headers=eve.headers
    )

    assert [r.status_code for r in (upload, listing, deletion)] == [404, 404, 404]
    assert len(await documents_of(client, ada, session_id)) == 1


async def test_only_the_uploader_or_the_owner_may_delete_a_document(
    client: httpx.AsyncClient,
) -> None:
    owner = await register_user(client, "Owner")
    bob, cleo = await register_user(client, "Bob"), await register_user(client, "Cleo")
    session_id = await create_session(client, owner)
    for member in (bob, cleo):
        added = await client.post(
            f"/v1/sessions/{session_id}/members", json={"user_id": member.id}, headers=owner.headers
        )
        assert added.status_code == 201, added.text
    by_bob = (await upload_file(client, bob, session_id, b"Bob's notes")).json()["data"]
    url = f"/v1/sessions/{session_id}/documents/{by_bob['id']}"

    refused = await client.delete(url, headers=cleo.headers)
    allowed = await client.delete(url, headers=owner.headers)

    assert refused.status_code == 403
    assert allowed.status_code == 200
    again = await client.delete(url, headers=owner.headers)
    assert again.status_code == 404


async def test_chunking_and_tokenising_run_off_the_event_loop(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1 MB document takes the CPU for hundreds of milliseconds: not on the loop,
    where every other request and socket of the node would wait for it."""
    user = await register_user(client)
    session_id = await create_session(client, user)
    loop_thread = threading.get_ident()
    ran_on: list[int] = []

    def chunk_and_note(text: str) -> list[Any]:
        ran_on.append(threading.get_ident())
        return chunk_document(text)

    monkeypatch.setattr(documents_module, "chunk_document", chunk_and_note)

    response = await upload_file(client, user, session_id, GUIDE.encode())

    assert response.status_code == 201, response.text
    assert ran_on and loop_thread not in ran_on


async def test_uploads_beyond_a_users_byte_quota_are_refused(app_with: AppClient) -> None:
    body = ("word " * 400).encode()  # 2000 bytes
    async with app_with(upload_quota_bytes=3000) as client:
        user = await register_user(client)
        other = await register_user(client, "Bob")
        session_id = await create_session(client, user)
        first = await upload_file(client, user, session_id, body)
        over = await upload_file(client, user, session_id, body)
        # The quota is the uploader's: someone else still has all of theirs.
        theirs = await upload_file(client, other, await create_session(client, other), body)
        await client.delete(
            f"/v1/sessions/{session_id}/documents/{first.json()['data']['id']}",
            headers=user.headers,
        )
        after_delete = await upload_file(client, user, session_id, body)

    assert first.status_code == 201, first.text
    assert over.status_code == 413, over.text
    error = over.json()["error"]
    assert error["code"] == "too_large"
    assert "quota" in error["message"]
    assert error["details"] == {
        "quota_bytes": 3000,
        "used_bytes": 2000,
        "quota_documents": 100,
        "used_documents": 1,
    }
    assert theirs.status_code == 201, theirs.text
    assert after_delete.status_code == 201, after_delete.text


async def test_uploads_beyond_a_users_document_quota_are_refused(app_with: AppClient) -> None:
    async with app_with(upload_quota_documents=2) as client:
        user = await register_user(client)
        session_id = await create_session(client, user)
        statuses = [
            (await upload_file(client, user, session_id, GUIDE.encode())).status_code
            for _ in range(3)
        ]
        listed = await documents_of(client, user, session_id)

    assert statuses == [201, 201, 413]
    assert len(listed) == 2
