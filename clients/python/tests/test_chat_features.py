"""The chat features (edits, deletes, reactions, read positions, search, streamed
messages, direct rooms) through the SDK's methods, and their recovery: a client away
while messages change gets them as ``changed`` events when it comes back."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any, Dict, List

import pytest

from bavard import BavardError, Client
from conftest import Proxy, eventually, within
from test_client import FAST, connected, recorder


def token(secret: str, sub: str) -> str:
    def encode(value: Dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    body = f"{encode({'alg': 'HS256', 'typ': 'JWT'})}.{encode({'sub': sub, 'exp': int(time.time()) + 3600})}"
    signature = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_edit_react_delete_read_search_and_streams(start_server: Any) -> None:
    server = start_server("--user-rate-per-second", "0")

    async def main() -> None:
        alice = await connected(server.url, "alice")
        bob = await connected(server.url, "bob")
        events: List[Dict[str, Any]] = []
        for kind in ("edited", "deleted", "reaction", "append", "finished"):
            bob.on(kind, events.append)
        for client in (alice, bob):
            await within(client.join("features"), "join")
        first = await within(alice.send("features", "helo world"), "send")
        second = await within(alice.send("features", "to be deleted"), "send")
        assert (await within(alice.edit("features", first["seq"], "hello world"), "edit"))["seq"] == first["seq"]
        await within(bob.react("features", first["seq"], "👍"), "react")
        await within(alice.delete("features", second["seq"]), "delete")
        with pytest.raises(BavardError) as refused:
            await within(bob.edit("features", first["seq"], "not mine"), "edit")
        assert refused.value.code == "forbidden"
        stream = await within(alice.send("features", "deploying", stream=True), "streamed send")
        await within(alice.append("features", stream["seq"], " is done"), "append")
        await within(alice.finish("features", stream["seq"]), "finish")

        await eventually(lambda: len(events) == 5, "the five change events")
        assert [e["type"] for e in events] == ["edited", "reaction", "deleted", "append", "finished"]
        assert all(b["rev"] > a["rev"] for a, b in zip(events, events[1:]))
        assert (await within(bob.read("features", first["seq"]), "read"))["seq"] == first["seq"]
        for _ in range(100):
            found = await within(bob.search("features", "hello wor"), "search")
            if found["messages"]:
                break
            await asyncio.sleep(0.1)
        assert [m["text"] for m in found["messages"]] == ["hello world"]
        page = await within(bob.history("features", after=0), "history")
        assert [(m["text"], bool(m.get("deleted"))) for m in page["messages"]] == [
            ("hello world", False), ("", True), ("deploying is done", False)]
        for client in (alice, bob):
            await client.close()

    asyncio.run(main())


def test_changes_made_while_away_come_back_as_changed_events(start_server: Any) -> None:
    server = start_server("--user-rate-per-second", "0")

    async def main() -> None:
        net = await Proxy(server.addr).start()
        writer = await connected(server.url, "writer")
        away = await connected(net.url, "away")
        seen = recorder(away)
        changed: List[Dict[str, Any]] = []
        away.on("changed", changed.append)
        states: List[str] = []
        away.on("state", lambda e: states.append(e["state"]))
        for client in (writer, away):
            await within(client.join("changes"), "join")
        for text in ("one", "two"):
            await within(writer.send("changes", text), "send")
        await eventually(lambda: len(seen.get("changes", [])) == 2, "both messages")
        net.cut()
        await eventually(lambda: "offline" in states, "the cut")
        await within(writer.edit("changes", 1, "one, edited"), "edit")
        await within(writer.delete("changes", 2), "delete")
        await within(writer.send("changes", "three"), "send")
        net.restore()
        await eventually(lambda: len(seen["changes"]) == 3 and len(changed) == 2, "the message and the changes")
        assert [(m["type"], m["seq"], m["text"], bool(m.get("deleted"))) for m in changed] == [
            ("changed", 1, "one, edited", False), ("changed", 2, "", True)]
        assert [m["text"] for m in seen["changes"]] == ["one", "two", "three"]
        await writer.close()
        await away.close()
        await net.close()

    asyncio.run(main())


def test_a_direct_room_for_two_signed_in_users(start_server: Any) -> None:
    server = start_server("--jwt-secret", "test-secret")

    async def main() -> None:
        ann = Client(server.url, token=token("test-secret", "u_ann"), **FAST)
        ben = Client(server.url, token=lambda: token("test-secret", "u_ben"), **FAST)
        async with ann, ben:
            room = (await within(ann.dm("u_ben"), "dm"))["room"]
            assert room.startswith("dm-") and len(room) == 35
            assert (await within(ben.dm("u_ann"), "dm"))["room"] == room
        guest = await connected(server.url, "guest")
        with pytest.raises(BavardError) as refused:
            await within(guest.dm("u_ann"), "dm")
        assert refused.value.code == "forbidden"
        await guest.close()

    asyncio.run(main())
