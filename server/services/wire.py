"""How stored rows look on the wire (REST bodies and WebSocket frames alike)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from db.models import ChatSession, Message, MessageVersion, Summary


def message_to_wire(message: Message | Row[Any]) -> dict[str, Any]:
    """A stored message: the ORM object, or a row with its columns (history pages)."""
    deleted = message.deleted_at is not None
    wire: dict[str, Any] = {
        "id": str(message.id),
        "session_id": str(message.session_id),
        "seq": message.seq,
        "role": message.role,
        "user_id": str(message.user_id) if message.user_id else None,
        # A deleted message keeps its place (seq has no gaps) but not its text.
        "content": "" if deleted else message.content,
        "client_msg_id": message.client_msg_id,
        "status": message.status,
        "model": message.model,
        "reply_to": str(message.reply_to) if message.reply_to else None,
        "created_at": message.created_at.isoformat(),
        "deleted": deleted,
        # A message just appended through Core has not read its defaults back.
        "version": message.version or 1,
        "version_count": message.version_count or 1,
    }
    if message.error_code is not None:
        wire["error"] = {"code": message.error_code, "message": message.error_message or ""}
    return wire


def version_to_wire(version: MessageVersion) -> dict[str, Any]:
    """One stored alternative of a message (``GET …/messages/{id}/versions``)."""
    wire: dict[str, Any] = {
        "version": version.version,
        "content": version.content,
        "model": version.model,
        "status": version.status,
        "created_at": version.created_at.isoformat(),
    }
    if version.error_code is not None:
        wire["error"] = {"code": version.error_code, "message": version.error_message or ""}
    return wire


def session_to_wire(chat: ChatSession) -> dict[str, Any]:
    return {
        "id": str(chat.id),
        "title": chat.title,
        "model": chat.model,
        "system_prompt": chat.system_prompt,
        "status": chat.status,
        "owner_id": str(chat.owner_id),
        "last_seq": chat.last_seq,
        "created_at": chat.created_at.isoformat(),
        "last_activity_at": chat.last_activity_at.isoformat(),
        "closed_at": chat.closed_at.isoformat() if chat.closed_at else None,
    }


def summary_to_wire(summary: Summary | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    return {
        "covers_seq": summary.covers_seq,
        "content": summary.content,
        "created_at": summary.created_at.isoformat(),
    }
