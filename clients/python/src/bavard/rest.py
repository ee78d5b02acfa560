"""Bavard's REST API (docs/protocol.md, section 9) on httpx: rooms, history, publishing
from a backend, members, moderation and the audit log. Every error is a
:class:`BavardError` with the server's code and the HTTP status."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, cast
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from .errors import BavardError

Json = Dict[str, Any]


def _base(url: str) -> str:
    """``http(s)://host[:port]`` from what a user types (``ws(s)://`` is accepted too)."""
    parts = urlsplit(url.strip())
    scheme = {"http": "http", "ws": "http", "https": "https", "wss": "https"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise BavardError("bad_request", f"cannot use {url!r}: expected http(s)://HOST[:PORT]")
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def _path(*segments: str) -> str:
    return "/api/" + "/".join(quote(s, safe="") for s in segments)


class Rest:
    """An async REST client: ``async with Rest("http://127.0.0.1:8000", api_key=KEY) as api: ...``.

    ``api_key`` (the server's ``--api-key``) or ``token`` (a user's JWT) goes in
    ``Authorization: Bearer``; without either, the server lets loopback callers write
    when it has no key. Pass ``verify`` (an ``ssl.SSLContext`` or a CA file) for a
    self-signed server.
    """

    def __init__(self, url: str, *, api_key: Optional[str] = None, token: Optional[str] = None,
                 timeout: float = 15.0, verify: Any = True) -> None:
        headers = {"accept": "application/json"}
        secret = api_key or token
        if secret:
            headers["authorization"] = f"Bearer {secret}"
        self._http = httpx.AsyncClient(base_url=_base(url), headers=headers, timeout=timeout, verify=verify)

    async def __aenter__(self) -> "Rest":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, *, json: Optional[Json] = None,
                    params: Optional[Json] = None, headers: Optional[Dict[str, str]] = None) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        body = {k: v for k, v in json.items() if v is not None} if json is not None else None
        try:
            response = await self._http.request(method, path, json=body, params=query, headers=headers)
        except httpx.TransportError as e:
            raise BavardError("disconnected", f"{method} {path}: cannot reach the server: {e}") from e
        if response.status_code == 204:
            return None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success:
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            code, message = error.get("code") or "internal", error.get("message") or response.reason_phrase
        else:
            code, message = "internal", response.text.strip() or response.reason_phrase
        raise BavardError(str(code), f"{method} {path}: {message}", status=response.status_code)

    async def _object(self, method: str, path: str, **options: Any) -> Json:
        """A call whose answer is a JSON object."""
        return cast(Json, await self._call(method, path, **options))

    # ------------------------------------------------------------------ rooms

    async def rooms(self, *, limit: Optional[int] = None) -> Any:
        """Rooms, most recently active first."""
        return await self._call("GET", "/api/rooms", params={"limit": limit})

    async def create_room(self, room: str, *, topic: Optional[str] = None, kind: Optional[str] = None) -> Json:
        """Creates a room (409 ``conflict`` if the name is taken)."""
        return await self._object("POST", "/api/rooms", json={"name": room, "topic": topic, "kind": kind})

    async def room(self, room: str) -> Json:
        return await self._object("GET", _path("rooms", room))

    async def update_room(self, room: str, *, topic: Optional[str] = None, kind: Optional[str] = None,
                          slow_mode_secs: Optional[int] = None, frozen: Optional[bool] = None) -> Json:
        """Changes a room's settings (at least one of them)."""
        return await self._object("PATCH", _path("rooms", room),
                                json={"topic": topic, "kind": kind, "slow_mode_secs": slow_mode_secs, "frozen": frozen})

    # ------------------------------------------------------------------ messages

    async def messages(self, room: str, *, before: Optional[int] = None, after: Optional[int] = None,
                       limit: Optional[int] = None) -> Json:
        """A page of history, oldest first: ``{"messages", "has_more"}`` (the ``history`` op's paging)."""
        return await self._object("GET", _path("rooms", room, "messages"),
                                params={"before": before, "after": after, "limit": limit})

    async def publish(self, room: str, text: str, *, from_name: Optional[str] = None,
                      reply_to: Optional[int] = None, idempotency_key: Optional[str] = None) -> Json:
        """Publishes a message once it is durable: ``{"room", "seq", "ts", "duplicate"?}``.

        A retry with the same ``idempotency_key`` answers the original seq.
        """
        headers = {"idempotency-key": idempotency_key} if idempotency_key else None
        body: Json = {"text": text, "reply_to": reply_to}
        if from_name is not None:
            body["from"] = {"name": from_name}
        return await self._object("POST", _path("rooms", room, "messages"), json=body, headers=headers)

    # ------------------------------------------------------------------ members and moderation

    async def members(self, room: str, *, cursor: Optional[str] = None, limit: Optional[int] = None) -> Json:
        """Who is online: the ``members`` op's reply."""
        return await self._object("GET", _path("rooms", room, "members"), params={"cursor": cursor, "limit": limit})

    async def add_member(self, room: str, user: str, role: Optional[str] = None) -> Json:
        return await self._object("PUT", _path("rooms", room, "members", user), json={"role": role})

    async def remove_member(self, room: str, user: str) -> None:
        await self._call("DELETE", _path("rooms", room, "members", user))

    async def _sanction(self, kind: str, room: str, user: str, duration_secs: Optional[int],
                        reason: Optional[str]) -> Json:
        return await self._object("POST", _path("rooms", room, kind),
                                json={"user": user, "duration_secs": duration_secs, "reason": reason})

    async def ban(self, room: str, user: str, *, duration_secs: Optional[int] = None,
                  reason: Optional[str] = None) -> Json:
        return await self._sanction("bans", room, user, duration_secs, reason)

    async def unban(self, room: str, user: str) -> None:
        await self._call("DELETE", _path("rooms", room, "bans", user))

    async def mute(self, room: str, user: str, *, duration_secs: Optional[int] = None,
                   reason: Optional[str] = None) -> Json:
        return await self._sanction("mutes", room, user, duration_secs, reason)

    async def unmute(self, room: str, user: str) -> None:
        await self._call("DELETE", _path("rooms", room, "mutes", user))

    async def kick(self, room: str, user: str, *, duration_secs: Optional[int] = None,
                   reason: Optional[str] = None) -> Json:
        return await self._sanction("kicks", room, user, duration_secs, reason)

    async def audit(self, room: str, *, before: Optional[int] = None, limit: Optional[int] = None) -> Json:
        """The room's audit log, newest first: ``{"entries", "has_more"}``."""
        return await self._object("GET", _path("rooms", room, "audit"), params={"before": before, "limit": limit})

    async def all_messages(self, room: str) -> List[Json]:
        """Every stored message of ``room``, oldest first (pages of 200)."""
        found: List[Json] = []
        while True:
            page = await self.messages(room, after=found[-1]["seq"] if found else 0, limit=200)
            found.extend(page["messages"])
            if not page["has_more"]:
                return found
