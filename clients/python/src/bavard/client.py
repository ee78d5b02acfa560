"""The reconnecting WebSocket client of Bavard's JSON protocol v1.

A :class:`Client` keeps one WebSocket to the server and survives the network: it
reconnects with jittered exponential backoff, rejoins each room with ``since`` = the
last seq it handed out (paging the rest with ``history`` when the server could not
return the whole gap), hands out each room's messages once and in seq order, and
resends unacknowledged messages with the same idempotency ``key``. Other server events,
known or not, go to the handlers registered for their type.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import secrets
import ssl as ssl_module
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from .errors import BavardError

log = logging.getLogger("bavard")

Event = Dict[str, Any]
Handler = Callable[[Event], Union[None, Awaitable[None]]]
TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]]]

RETRYABLE = frozenset({"rate_limited", "internal", "unavailable"})
GAP_PAGE = 200


def endpoint(url: str, name: Optional[str] = None, token: Optional[str] = None) -> str:
    """The URL of the JSON endpoint at ``url`` (``http(s)://`` or ``ws(s)://``), with the identity in the query."""
    parts = urlsplit(url.strip())
    schemes = {"ws": "ws", "http": "ws", "wss": "wss", "https": "wss"}
    scheme = schemes.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise BavardError("bad_request", f"cannot use {url!r}: expected http(s)://HOST[:PORT] or ws(s)://HOST[:PORT]/ws")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("name", "token") or
             (k == "name" and name is None) or (k == "token" and token is None)]
    if name is not None:
        query.append(("name", name))
    if token is not None:
        query.append(("token", token))
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def _jittered(seconds: float) -> float:
    """``seconds`` give or take 25 %, so that clients cut off together do not come back in lockstep."""
    return seconds * (0.75 + random.random() * 0.5)


@dataclass
class _Room:
    name: str
    last_seq: int
    synced: bool
    limit: int
    #: The highest change number seen, passed as ``since_rev`` on rejoin; None before the first join.
    rev: Optional[int] = None
    joined: bool = False
    joining: bool = False
    recovering: bool = False
    buffer: List[Event] = field(default_factory=list)
    waiters: List["asyncio.Future[Event]"] = field(default_factory=list)


@dataclass
class _Send:
    fields: Dict[str, Any]
    future: "asyncio.Future[Event]"
    in_flight: bool = False
    refusals: int = 0
    timer: Optional[asyncio.TimerHandle] = None


class EventStream:
    """The server events of a :class:`Client` from its creation on, queued until read."""

    def __init__(self, client: "Client") -> None:
        self._queue: "asyncio.Queue[Event]" = asyncio.Queue()
        self._stop = client.on("*", self._queue.put_nowait)

    def __aiter__(self) -> "EventStream":
        return self

    async def __anext__(self) -> Event:
        return await self._queue.get()

    async def aclose(self) -> None:
        """Stops queueing events."""
        self._stop()


class Client:
    """A reconnecting connection to a Bavard server.

    Use it as ``async with Client(url, name="alice") as client:`` (which waits for the
    first connection and fails if it fails), or call :meth:`start` and later :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        *,
        name: Optional[str] = None,
        token: Optional[TokenSource] = None,
        ssl: Optional[ssl_module.SSLContext] = None,
        min_backoff: float = 0.5,
        max_backoff: float = 15.0,
        request_timeout: float = 15.0,
        ping_every: float = 25.0,
    ) -> None:
        endpoint(url)  # fails now on a URL that cannot work
        self.url = url
        self.name = name
        self._token = token
        self._ssl = ssl
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.request_timeout = request_timeout
        self.ping_every = ping_every
        #: The current connection's ``welcome`` frame; None while offline.
        self.welcome: Optional[Event] = None
        self._ws: Optional[ClientConnection] = None
        self._online = False
        self._closed = False
        self._connection = 0
        self._attempt = 0
        self._next_id = 1
        self._calls: Dict[int, "asyncio.Future[Event]"] = {}
        self._rooms: Dict[str, _Room] = {}
        self._outbox: List[_Send] = []
        self._handlers: Dict[str, List[Handler]] = {}
        self._key_prefix = secrets.token_hex(8)
        self._key_counter = 0
        self._runner: Optional[asyncio.Task[None]] = None
        self._state_waiters: List["asyncio.Future[None]"] = []
        self._wake = asyncio.Event()
        self._fatal: Optional[BavardError] = None
        self._last_reason: Optional[str] = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ life

    async def __aenter__(self) -> "Client":
        self.start()
        try:
            await self.ready(first=True)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Starts connecting (and reconnecting, until :meth:`close`)."""
        if self._runner is None and not self._closed:
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def ready(self, first: bool = False) -> None:
        """Waits until connected. With ``first``, fails on the first failed attempt instead of waiting for the next."""
        self.start()
        while not self._online:
            if self._closed:
                raise BavardError("closed", "the client is closed")
            if self._fatal is not None:
                raise self._fatal
            failures = self._attempt
            waiter: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
            self._state_waiters.append(waiter)
            await waiter
            if first and not self._online and self._attempt > failures:
                raise self._fatal or BavardError("disconnected", self._last_reason or "cannot reach the server")

    async def close(self) -> None:
        """Closes the connection for good; what waits for an answer fails with ``closed``."""
        if self._closed:
            return
        self._closed = True
        error = BavardError("closed", "the client was closed")
        ws = self._ws
        self._forget_socket()
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        for send in self._outbox:
            self._fail(send.future, error)
            if send.timer:
                send.timer.cancel()
        self._outbox.clear()
        for room in self._rooms.values():
            for waiter in room.waiters:
                self._fail(waiter, error)
        self._rooms.clear()
        self._notify_waiters()
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for task in list(self._tasks):
            task.cancel()
        self._emit("state", {"state": "closed"})

    @property
    def connected(self) -> bool:
        """Whether a connection is up and welcomed."""
        return self._online

    def last_seq(self, room: str) -> Optional[int]:
        """The last seq of ``room`` handed out; None if the room is not joined."""
        state = self._rooms.get(room)
        return state.last_seq if state and state.synced else None

    @property
    def unacknowledged(self) -> int:
        """Messages sent and not yet acknowledged."""
        return len(self._outbox)

    def reconnect_now(self) -> None:
        """Connects now if offline, without waiting for the backoff (and after a refusal too)."""
        self._attempt = 0
        self._fatal = None
        self._wake.set()

    async def drop(self, reason: str = "dropped by the application") -> None:
        """Drops the current connection (it is made again after the backoff)."""
        ws = self._ws
        if ws is not None:
            await ws.close(1000, reason)

    # ------------------------------------------------------------------ events

    def on(self, type: str, handler: Handler) -> Callable[[], None]:
        """Calls ``handler(event)`` for each event of ``type``; returns a function that stops it.

        Types: the server's (``message``, ``presence``, ``typing``, ``occupancy``,
        ``removed``, ``closing``, ``error``, ``welcome``, and any type a newer server
        sends), ``*`` for every server event, and the client's own: ``state``
        (``{"state": "connecting"|"online"|"offline"|"closed", ...}``), ``rejoined``
        (``{"room", "reply"}``) and ``history_restarted`` (``{"room", "seq"}``). A
        handler may be a coroutine function; it then runs as a task.
        """
        self._handlers.setdefault(type, []).append(handler)

        def stop() -> None:
            handlers = self._handlers.get(type, [])
            if handler in handlers:
                handlers.remove(handler)

        return stop

    def events(self) -> "EventStream":
        """Every server event from the call on (messages each once, in order), as an async
        iterator: ``async for event in client.events(): ...``; ``aclose()`` it when done."""
        return EventStream(self)

    def _emit(self, type: str, event: Event) -> None:
        for handler in list(self._handlers.get(type, [])):
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    self._spawn(result)
            except Exception:  # noqa: BLE001 - one handler's failure must not stop the others
                log.exception("a bavard event handler failed")

    def _emit_server(self, frame: Event) -> None:
        self._emit(str(frame["type"]), frame)
        self._emit("*", frame)

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ connection

    async def _run(self) -> None:
        while not self._closed:
            if self._fatal is not None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._emit("state", {"state": "connecting", "attempt": self._attempt})
            code, reason = await self._connect_once()
            self._last_reason = reason
            if self._closed:
                return
            if self._fatal is not None:
                self._attempt += 1
                self._emit("state", {"state": "offline", "reason": reason, "close_code": code,
                                     "attempt": self._attempt, "retry_at": None, "error": self._fatal})
                self._notify_waiters()
                continue
            delay = _jittered(min(self.max_backoff, self.min_backoff * 2 ** min(self._attempt, 30)))
            self._attempt += 1
            self._emit("state", {"state": "offline", "reason": reason, "close_code": code,
                                 "attempt": self._attempt, "retry_at": time.time() + delay})
            self._notify_waiters()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass

    def _notify_waiters(self) -> None:
        # Wakes ready(): it checks the state again.
        waiters, self._state_waiters = self._state_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _connect_once(self) -> "tuple[Optional[int], str]":
        """One connection, from opening to its end: (close code, why)."""
        try:
            token = self._token() if callable(self._token) else self._token
            if inspect.isawaitable(token):
                token = await token
            url = endpoint(self.url, self.name, token)
            ws = await ws_connect(url, ssl=self._ssl, open_timeout=self.request_timeout, max_size=None,
                                  ping_interval=self.ping_every, ping_timeout=self.request_timeout)
        except websockets.exceptions.InvalidStatus as e:
            status = e.response.status_code
            body = e.response.body.decode("utf-8", "replace").strip() if e.response.body else ""
            text = f"the server refused the connection with HTTP {status}" + (f": {body}" if body else "")
            if 400 <= status < 500 and status != 429:
                self._fatal = BavardError("refused", text, status=status)
            return None, text
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
            return None, f"cannot reach the server: {e}"
        self._ws = ws
        self._connection += 1
        connection = self._connection
        try:
            welcome = json.loads(await asyncio.wait_for(ws.recv(), self.request_timeout))
            if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
                return None, f"expected welcome, got {welcome!r}"
            self._welcomed(welcome, connection)
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(frame, dict) and isinstance(frame.get("type"), str):
                    self._handle(frame, connection)
            close = ws.close_code
            return close, ws.close_reason or "connection lost"
        except websockets.exceptions.ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else 1006
            reason = (e.rcvd.reason if e.rcvd else "") or "connection lost"
            if code in (1003, 1008):
                self._fatal = BavardError("refused", f"the server closed the connection: {reason}", close_code=code)
            return code, reason
        except asyncio.TimeoutError:
            return None, "no welcome from the server"
        finally:
            self._forget_socket()
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:  # noqa: BLE001 - it is gone either way
                pass

    def _forget_socket(self) -> None:
        self._ws = None
        self._online = False
        self.welcome = None
        error = BavardError("disconnected", "the connection was lost before the answer came")
        calls = list(self._calls.values())
        self._calls.clear()
        for call in calls:
            self._fail(call, error)
        for room in self._rooms.values():
            room.joined = False
            room.joining = False
            room.recovering = False
            room.buffer = []
        for send in self._outbox:
            send.in_flight = False

    @staticmethod
    def _fail(future: "asyncio.Future[Any]", error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    def _welcomed(self, welcome: Event, connection: int) -> None:
        self.welcome = welcome
        self._online = True
        self._attempt = 0
        self._emit("state", {"state": "online", "welcome": welcome})
        self._emit_server(welcome)
        for room in list(self._rooms.values()):
            self._spawn(self._join_room(room, connection))
        for send in list(self._outbox):
            if send.fields["room"] not in self._rooms:
                self._try_send(send)
        self._notify_waiters()

    # ------------------------------------------------------------------ frames

    def _handle(self, frame: Event, connection: int) -> None:
        kind = frame["type"]
        if kind == "reply":
            call = self._calls.pop(frame.get("id"), None)  # type: ignore[arg-type]
            if call is None or call.done():
                return
            if frame.get("ok"):
                call.set_result({k: v for k, v in frame.items() if k not in ("type", "id", "ok")})
            else:
                body = frame.get("error") or {}
                call.set_exception(BavardError(body.get("code") or "internal",
                                               body.get("message") or "the server refused the request"))
            return
        if kind == "message":
            self._received(frame)
            return
        if kind == "removed":
            room = self._rooms.get(str(frame.get("room")))
            if room is not None:
                self._forget_room(room, BavardError("forbidden", f"removed from room {room.name} ({frame.get('action')})"))
        elif isinstance(frame.get("rev"), int):
            # A change to a message (edited, deleted, reaction...): remembered for since_rev.
            room = self._rooms.get(str(frame.get("room")))
            if room is not None:
                room.rev = max(room.rev or 0, frame["rev"])
        self._emit_server(frame)

    async def _call(self, op: str, fields: Dict[str, Any]) -> Event:
        """One request on the current connection; fails at once when offline."""
        ws = self._ws
        if ws is None or not self._online:
            raise BavardError("disconnected", "not connected")
        request_id = self._next_id
        self._next_id += 1
        future: "asyncio.Future[Event]" = asyncio.get_running_loop().create_future()
        self._calls[request_id] = future
        try:
            await ws.send(json.dumps({**fields, "op": op, "id": request_id}))
            return await asyncio.wait_for(asyncio.shield(future), self.request_timeout)
        except asyncio.TimeoutError:
            # A request without an answer means the connection is dead: start over.
            if ws is self._ws:
                self._spawn(ws.close(1000, "no answer from the server"))
            raise BavardError("timeout", f"no answer to {op} within {self.request_timeout} s") from None
        except websockets.exceptions.ConnectionClosed:
            raise BavardError("disconnected", "the connection was lost before the answer came") from None
        finally:
            self._calls.pop(request_id, None)

    # ------------------------------------------------------------------ rooms and messages

    async def _join_room(self, room: _Room, connection: int) -> None:
        room.joining = True
        room.recovering = True
        room.buffer = []
        rejoin = room.synced
        since = room.last_seq if room.synced else None
        fields: Dict[str, Any] = {"room": room.name}
        if since is None:
            fields["limit"] = room.limit
        else:
            fields["since"] = since
            if room.rev is not None:
                fields["since_rev"] = room.rev
        try:
            reply = await self._call("join", fields)
        except BavardError as e:
            if connection != self._connection or self._rooms.get(room.name) is not room or not e.from_server:
                return
            room.joining = False
            if e.code in RETRYABLE:
                await asyncio.sleep(_jittered(self.min_backoff))
                if connection == self._connection and self._online and self._rooms.get(room.name) is room:
                    await self._join_room(room, connection)
                return
            self._forget_room(room, e)
            return
        if connection != self._connection or self._rooms.get(room.name) is not room:
            return
        messages = reply.get("messages") or []
        changed = reply.get("changed") or []
        # The room's change number now (absent: 0); what changes after it comes as events.
        room.rev = max(room.rev or 0, reply["rev"] if isinstance(reply.get("rev"), int) else 0)
        if since is None:
            room.last_seq = int(reply["seq"])
            room.synced = True
        else:
            reply["messages"] = []
            if reply["seq"] < room.last_seq:
                room.last_seq = int(reply["seq"])
                self._emit("history_restarted", {"room": room.name, "seq": reply["seq"]})
        if rejoin:
            self._emit("rejoined", {"room": room.name, "reply": reply})
        for waiter in room.waiters:
            if not waiter.done():
                waiter.set_result(reply)
        room.waiters.clear()
        for message in changed:
            self._emit_server({**message, "type": "changed"})
        if since is not None:
            for message in messages:
                self._deliver(room, message, reply["seq"])
            if reply.get("recovered") is False and room.last_seq < reply["seq"]:
                if not await self._page(room, reply["seq"] + 1, connection):
                    return
        # Let the caller see the join reply before the live messages that followed it.
        await asyncio.sleep(0)
        if connection != self._connection or self._rooms.get(room.name) is not room:
            return
        room.joined = True
        room.joining = False
        await self._catch_up(room, connection)
        for send in list(self._outbox):
            if send.fields["room"] == room.name:
                self._try_send(send)

    def _deliver(self, room: _Room, message: Event, up_to: float = float("inf")) -> None:
        seq = message.get("seq")
        if not isinstance(seq, int) or seq <= room.last_seq or seq > up_to:
            return
        room.last_seq = seq
        message.setdefault("type", "message")
        self._emit("message", message)
        self._emit("*", message)

    async def _page(self, room: _Room, before: int, connection: int) -> bool:
        """Pages ``room`` after its last seq and before ``before`` with ``history``; False if the connection went."""
        while room.last_seq < before - 1:
            start = room.last_seq
            try:
                page = await self._call("history", {"room": room.name, "after": start, "before": before, "limit": GAP_PAGE})
            except BavardError as e:
                if connection != self._connection:
                    return False
                if e.from_server and e.code not in RETRYABLE:
                    self._forget_room(room, e)
                elif self._ws is not None:
                    await self._ws.close(1000, "cannot read the missed messages")
                return False
            if connection != self._connection or self._rooms.get(room.name) is not room:
                return False
            for message in page.get("messages") or []:
                self._deliver(room, message, before - 1)
            if room.last_seq == start or not page.get("has_more"):
                # Nothing more in that range (never expected: seqs have no gaps).
                room.last_seq = max(room.last_seq, before - 1)
                break
        return True

    async def _catch_up(self, room: _Room, connection: int) -> None:
        """Hands out the live messages that waited during a join or a paging, filling any gap first."""
        room.recovering = True
        while True:
            room.buffer.sort(key=lambda m: m["seq"])
            following = next((m for m in room.buffer if m["seq"] > room.last_seq), None)
            if following is not None and following["seq"] > room.last_seq + 1:
                if not await self._page(room, following["seq"], connection):
                    return
                continue
            waiting, room.buffer = room.buffer, []
            for message in waiting:
                self._deliver(room, message)
            if not room.buffer:
                break
        room.recovering = False

    def _received(self, message: Event) -> None:
        room = self._rooms.get(str(message.get("room")))
        if room is None or not isinstance(message.get("seq"), int):
            return
        if room.recovering or not room.joined:
            room.buffer.append(message)
            return
        seq = message["seq"]
        if seq <= room.last_seq:
            return
        if seq == room.last_seq + 1:
            self._deliver(room, message)
            return
        # Something is missing between what was handed out and this message: fetch it first.
        room.buffer.append(message)
        self._spawn(self._catch_up(room, self._connection))

    def _forget_room(self, room: _Room, error: BavardError) -> None:
        if self._rooms.get(room.name) is not room:
            return
        del self._rooms[room.name]
        for waiter in room.waiters:
            self._fail(waiter, error)
        room.waiters.clear()
        # Sends that waited for the room go out now, and get the server's answer.
        for send in list(self._outbox):
            if send.fields["room"] == room.name:
                self._try_send(send)

    # ------------------------------------------------------------------ sending

    def _try_send(self, send: _Send) -> None:
        if send.in_flight or send.timer is not None or not self._online or send.future.done():
            return
        room = self._rooms.get(send.fields["room"])
        if room is not None and not room.joined:
            return  # sent once the room is rejoined
        send.in_flight = True
        self._spawn(self._send_once(send))

    async def _send_once(self, send: _Send) -> None:
        try:
            reply = await self._call("send", send.fields)
        except BavardError as e:
            send.in_flight = False
            if send not in self._outbox:
                return
            if not e.from_server:
                return  # resent after the reconnect
            if e.code in RETRYABLE:
                send.refusals += 1
                wait = _jittered(min(self.max_backoff, self.min_backoff * 2 ** min(send.refusals, 30)))

                def again() -> None:
                    send.timer = None
                    self._try_send(send)

                send.timer = asyncio.get_running_loop().call_later(wait, again)
                return
            self._settle(send)
            self._fail(send.future, e)
            return
        self._settle(send)
        if not send.future.done():
            send.future.set_result(reply)

    def _settle(self, send: _Send) -> None:
        if send in self._outbox:
            self._outbox.remove(send)
        if send.timer is not None:
            send.timer.cancel()
            send.timer = None

    # ------------------------------------------------------------------ the API

    async def join(self, room: str, *, since: Optional[int] = None, limit: int = 50) -> Event:
        """Joins ``room``; it is joined again after each reconnect, and its messages come as
        ``message`` events, each once and in seq order.

        Without ``since``, the reply's ``messages`` hold the latest ``limit`` messages, as
        history. With ``since`` (the last seq the application has), every later message
        comes as an event (paged with ``history`` past the server's recovery limit) and
        the reply's ``messages`` is empty. Waits for the connection if needed.
        """
        if self._closed:
            raise BavardError("closed", "the client is closed")
        self.start()
        state = self._rooms.get(room)
        fresh = state is None
        if state is None:
            state = _Room(name=room, last_seq=since or 0, synced=since is not None, limit=limit)
            self._rooms[room] = state
        future: "asyncio.Future[Event]" = asyncio.get_running_loop().create_future()
        state.waiters.append(future)
        if self._online and not state.joining and (fresh or state.joined):
            state.joined = False
            self._spawn(self._join_room(state, self._connection))
        return await future

    async def leave(self, room: str) -> None:
        """Leaves ``room``: its events stop, and it is not rejoined."""
        state = self._rooms.get(room)
        for send in [s for s in self._outbox if s.fields["room"] == room and not s.in_flight]:
            self._settle(send)
            self._fail(send.future, BavardError("not_found", f"room {room} was left before the message was sent"))
        if state is not None:
            self._forget_room(state, BavardError("not_found", f"room {room} was left"))
        if not self._online or state is None:
            return
        try:
            await self._call("leave", {"room": room})
        except BavardError as e:
            if e.from_server and e.code != "not_found":
                raise

    async def send(self, room: str, text: str, *, key: Optional[str] = None,
                   reply_to: Optional[int] = None, **fields: Any) -> Event:
        """Sends ``text`` to ``room``; returns ``{"room", "seq", "ts", "duplicate"?}`` once stored.

        While the connection is down it waits, and it is resent with the same ``key``
        after each reconnect (and after a while when the server is busy), so it is
        stored once. Raises :class:`BavardError` for other refusals (``too_large``,
        ``forbidden``...).
        """
        if self._closed:
            raise BavardError("closed", "the client is closed")
        self.start()
        self._key_counter += 1
        body: Dict[str, Any] = {**fields, "room": room, "text": text,
                                "key": key if key is not None else f"p{self._key_prefix}-{self._key_counter}"}
        if reply_to is not None:
            body["reply_to"] = reply_to
        send = _Send(fields=body, future=asyncio.get_running_loop().create_future())
        self._outbox.append(send)
        self._try_send(send)
        return await send.future

    async def request(self, op: str, **fields: Any) -> Event:
        """Any op: waits for the connection, sends ``{"op": op, **fields}`` and returns the reply's fields.

        Not retried if the connection is lost before the answer (``disconnected``): the op
        may or may not have happened.
        """
        await self.ready()
        return await self._call(op, {k: v for k, v in fields.items() if v is not None})

    async def _read(self, op: str, **fields: Any) -> Event:
        """Like :meth:`request`, retried after a reconnect (for reads, which may be repeated)."""
        while True:
            try:
                return await self.request(op, **fields)
            except BavardError as e:
                if e.from_server or e.code in ("closed", "refused"):
                    raise

    async def history(self, room: str, *, before: Optional[int] = None, after: Optional[int] = None,
                      limit: Optional[int] = None, thread: Optional[int] = None) -> Event:
        """A page of stored messages, oldest first: ``{"messages", "has_more"}`` (``thread``: the replies to that seq)."""
        return await self._read("history", room=room, before=before, after=after, limit=limit, thread=thread)

    async def members(self, room: str, *, cursor: Optional[str] = None, limit: Optional[int] = None) -> Event:
        """A page of the users online in ``room``: ``{"room", "member_count", "members", "cursor"?}``."""
        return await self._read("members", room=room, cursor=cursor, limit=limit)

    async def typing(self, room: str) -> None:
        """Tells the room's other users that this one is typing."""
        await self.request("typing", room=room)

    async def ping(self) -> None:
        await self.request("ping")

    async def create(self, room: str, *, kind: Optional[str] = None, topic: Optional[str] = None) -> Event:
        return await self.request("create", room=room, kind=kind, topic=topic)

    async def add_member(self, room: str, user: str, role: Optional[str] = None) -> Event:
        return await self.request("add_member", room=room, user=user, role=role)

    async def remove_member(self, room: str, user: str) -> Event:
        return await self.request("remove_member", room=room, user=user)

    async def set_role(self, room: str, user: str, role: str) -> Event:
        return await self.request("set_role", room=room, user=user, role=role)

    async def kick(self, room: str, user: str, *, duration_secs: Optional[int] = None,
                   reason: Optional[str] = None) -> Event:
        return await self.request("kick", room=room, user=user, duration_secs=duration_secs, reason=reason)

    async def ban(self, room: str, user: str, *, duration_secs: Optional[int] = None,
                  reason: Optional[str] = None) -> Event:
        return await self.request("ban", room=room, user=user, duration_secs=duration_secs, reason=reason)

    async def unban(self, room: str, user: str, *, reason: Optional[str] = None) -> Event:
        return await self.request("unban", room=room, user=user, reason=reason)

    async def mute(self, room: str, user: str, *, duration_secs: Optional[int] = None,
                   reason: Optional[str] = None) -> Event:
        return await self.request("mute", room=room, user=user, duration_secs=duration_secs, reason=reason)

    async def unmute(self, room: str, user: str, *, reason: Optional[str] = None) -> Event:
        return await self.request("unmute", room=room, user=user, reason=reason)

    async def dm(self, user: str) -> Event:
        """The direct room of this (signed-in) user and ``user``: ``{"room"}``; join it like any room."""
        return await self.request("dm", user=user)

    async def edit(self, room: str, seq: int, text: str) -> Event:
        """Replaces the text of one's message: ``{"room", "seq", "rev"}``."""
        return await self.request("edit", room=room, seq=seq, text=text)

    async def delete(self, room: str, seq: int) -> Event:
        """Deletes a message (one's own; moderators any)."""
        return await self.request("delete", room=room, seq=seq)

    async def react(self, room: str, seq: int, emoji: str) -> Event:
        return await self.request("react", room=room, seq=seq, emoji=emoji)

    async def unreact(self, room: str, seq: int, emoji: str) -> Event:
        return await self.request("unreact", room=room, seq=seq, emoji=emoji)

    async def read(self, room: str, seq: int) -> Event:
        """Moves the user's read position forward: ``{"room", "seq", "unread"}``."""
        return await self.request("read", room=room, seq=seq)

    async def search(self, room: str, q: str, *, limit: Optional[int] = None, offset: Optional[int] = None) -> Event:
        """Messages matching the words of ``q``, best first: ``{"messages", "has_more"}``."""
        return await self.request("search", room=room, q=q, limit=limit, offset=offset)

    async def append(self, room: str, seq: int, text: str) -> Event:
        """Adds text to one's streamed message (sent with ``send(..., stream=True)``)."""
        return await self.request("append", room=room, seq=seq, text=text)

    async def finish(self, room: str, seq: int) -> Event:
        """Ends one's streamed message."""
        return await self.request("finish", room=room, seq=seq)

    async def refresh(self, token: str) -> Event:
        """Moves this connection's expiry to a fresh token's (the same user's)."""
        return await self.request("refresh", token=token)
