"""The Python SDK against the real server: requests and events, typed errors, recovery
after a network cut and a restart (nothing lost, nothing twice), and the REST calls."""

from __future__ import annotations

import asyncio
import signal
from typing import Any, Dict, List

import pytest

from bavard import BavardError, Client, Rest, endpoint
from conftest import Proxy, eventually, within

FAST: Dict[str, Any] = {"min_backoff": 0.05, "max_backoff": 0.5, "request_timeout": 10.0}


def recorder(client: Client) -> Dict[str, List[Dict[str, Any]]]:
    seen: Dict[str, List[Dict[str, Any]]] = {}
    client.on("message", lambda m: seen.setdefault(m["room"], []).append(m))
    return seen


async def connected(url: str, name: str, **options: Any) -> Client:
    client = Client(url, name=name, **{**FAST, **options})
    await within(client.__aenter__(), f"{name} to connect")
    return client


def test_endpoint_makes_the_websocket_url() -> None:
    assert endpoint("http://127.0.0.1:8000", "al ice") == "ws://127.0.0.1:8000/ws?name=al+ice"
    assert endpoint("https://chat.example.com/", token="t.k") == "wss://chat.example.com/ws?token=t.k"
    assert endpoint("ws://h:1/ws?name=old", "new") == "ws://h:1/ws?name=new"
    with pytest.raises(BavardError, match="expected http"):
        endpoint("ftp://h/")


def test_join_send_events_history_members_typing_leave(start_server: Any) -> None:
    server = start_server("--user-rate-per-second", "0")

    async def main() -> None:
        alice = await connected(server.url, "alice")
        bob = await connected(server.url, "bob")
        assert alice.welcome is not None and alice.welcome["user"]["id"] == "g_alice"
        on_bob = recorder(bob)
        presence: List[Dict[str, Any]] = []
        alice.on("presence", presence.append)
        typing: List[Dict[str, Any]] = []
        bob.on("typing", typing.append)

        first = await within(alice.join("basics"), "alice joins")
        assert first["seq"] == 0 and [u["name"] for u in first["members"]] == ["alice"]
        await within(bob.join("basics"), "bob joins")
        await eventually(lambda: any(u["name"] == "bob" for e in presence for u in e.get("joined", [])), "bob's arrival")

        acks = [await within(alice.send("basics", text), "send") for text in ("one", "two", "three")]
        assert [a["seq"] for a in acks] == [1, 2, 3]
        await eventually(lambda: len(on_bob.get("basics", [])) == 3, "bob to get three messages")
        assert [(m["seq"], m["text"], m["from"]["name"]) for m in on_bob["basics"]] == [
            (1, "one", "alice"), (2, "two", "alice"), (3, "three", "alice")]

        again = await within(alice.send("basics", "one", key="fixed-key"), "keyed send")
        repeat = await within(alice.send("basics", "one", key="fixed-key"), "repeated keyed send")
        assert repeat["seq"] == again["seq"] and repeat["duplicate"] is True

        page = await within(alice.history("basics", before=3, limit=1), "history")
        assert [m["text"] for m in page["messages"]] == ["two"] and page["has_more"] is True
        assert (await within(alice.members("basics"), "members"))["member_count"] == 2

        await within(alice.typing("basics"), "typing")
        await eventually(lambda: any(e["user"]["name"] == "alice" for e in typing), "bob to see alice typing")

        carol = await connected(server.url, "carol")
        joined = await within(carol.join("basics", limit=2), "carol joins")
        assert [m["seq"] for m in joined["messages"]] == [3, 4]

        # Events from a `*` handler and the async iterator see the same stream.
        stream = carol.events()
        await within(bob.leave("basics"), "bob leaves")
        await within(alice.send("basics", "after bob left"), "send")
        event = await within(stream.__anext__(), "an event on carol's stream")
        while event["type"] != "message":
            event = await within(stream.__anext__(), "carol's message")
        assert event["text"] == "after bob left"
        await stream.aclose()
        await asyncio.sleep(0.3)
        assert len(on_bob["basics"]) == 4
        for client in (alice, bob, carol):
            await client.close()

    asyncio.run(main())


def test_errors_carry_the_protocol_code_and_other_ops_go_through_request(start_server: Any) -> None:
    server = start_server()

    async def main() -> None:
        dave = await connected(server.url, "dave")
        await within(dave.join("errors"), "join")
        assert dave.welcome is not None
        with pytest.raises(BavardError) as too_large:
            await dave.send("errors", "x" * (dave.welcome["limits"]["max_text_chars"] + 1))
        assert too_large.value.code == "too_large" and too_large.value.from_server
        for call, code in [
            (dave.request("no_such_op"), "unknown_op"),
            (dave.history("bad name!"), "bad_request"),
            (dave.send("not-joined", "hi"), "forbidden"),
        ]:
            with pytest.raises(BavardError) as refused:
                await within(call, code)
            assert refused.value.code == code
        assert await within(dave.create("made-by-dave", topic="hi"), "create") == {
            "room": "made-by-dave", "kind": "public", "topic": "hi"}
        for call, code in [
            (dave.create("made-by-dave"), "conflict"),
            (dave.create("secret", kind="private"), "forbidden"),
            (dave.add_member("made-by-dave", "u_x"), "forbidden"),
            (dave.refresh("abc"), "bad_request"),
        ]:
            with pytest.raises(BavardError) as refused:
                await within(call, code)
            assert refused.value.code == code
        # A send that waited for a join the server refuses fails with the refusal too.
        async with Rest(server.url) as api:
            await api.create_room("private-room", kind="private")
        joining = asyncio.ensure_future(dave.join("private-room"))
        sending = asyncio.ensure_future(dave.send("private-room", "let me in"))
        for waiting in (joining, sending):
            with pytest.raises(BavardError) as refused:
                await within(waiting, "the refusal")
            assert refused.value.code == "forbidden"
        assert dave.unacknowledged == 0
        await dave.close()
        with pytest.raises(BavardError) as closed:
            await dave.send("errors", "late")
        assert closed.value.code == "closed"

    asyncio.run(main())


def test_a_refused_connection_fails_at_once_with_the_http_status(start_server: Any) -> None:
    server = start_server()

    async def main() -> None:
        with pytest.raises(BavardError) as refused:
            await connected(server.url, "x" * 40)
        assert refused.value.code == "refused" and refused.value.status == 400

    asyncio.run(main())


def test_join_with_since_pages_past_the_recovery_limit(start_server: Any) -> None:
    server = start_server("--user-rate-per-second", "0", "--recovery-limit", "5")

    async def main() -> None:
        writer = await connected(server.url, "writer")
        await within(writer.join("backlog"), "join")
        for i in range(1, 24):
            await within(writer.send("backlog", f"m{i}"), "send")
        reader = await connected(server.url, "reader")
        seen = recorder(reader)
        reply = await within(reader.join("backlog", since=3), "join since")
        assert reply["recovered"] is False and reply["messages"] == []
        await eventually(lambda: len(seen.get("backlog", [])) == 20, "the 20 missed messages")
        assert [m["seq"] for m in seen["backlog"]] == list(range(4, 24))
        assert reader.last_seq("backlog") == 23
        await writer.close()
        await reader.close()

    asyncio.run(main())


def test_after_a_network_cut_it_recovers_the_gap_and_resends_with_the_same_key(start_server: Any) -> None:
    server = start_server("--user-rate-per-second", "0", "--recovery-limit", "5")

    async def main() -> None:
        net = await Proxy(server.addr).start()
        async with Rest(server.url) as api:
            writer = await connected(server.url, "writer")
            cut_off = await connected(net.url, "cutoff")
            seen = recorder(cut_off)
            states: List[str] = []
            cut_off.on("state", lambda e: states.append(e["state"]))
            rejoined: List[str] = []
            cut_off.on("rejoined", lambda e: rejoined.append(e["room"]))
            await within(writer.join("cut"), "join")
            await within(cut_off.join("cut"), "join")
            await within(writer.send("cut", "before"), "send")
            await eventually(lambda: len(seen.get("cut", [])) == 1, "the first message")

            # The server stores this one, but its answer is lost with the connection.
            net.deafen()
            unanswered = asyncio.ensure_future(cut_off.send("cut", "answer lost"))
            for _ in range(200):
                if len(await api.all_messages("cut")) == 2:
                    break
                await asyncio.sleep(0.05)
            assert len(await api.all_messages("cut")) == 2
            net.cut()
            await eventually(lambda: "offline" in states, "the cut to be noticed")
            offline = asyncio.ensure_future(cut_off.send("cut", "written offline"))
            for i in range(1, 13):
                await within(writer.send("cut", f"missed {i}"), "send")
            await asyncio.sleep(0.2)
            assert cut_off.unacknowledged == 2
            net.restore()

            first = await within(unanswered, "the unanswered message to be acknowledged")
            assert (first["seq"], first.get("duplicate")) == (2, True)
            assert (await within(offline, "the offline message"))["seq"] == 15
            await eventually(lambda: len(seen["cut"]) == 15, "every message after the cut")
            assert [m["seq"] for m in seen["cut"]] == list(range(1, 16))
            for text in ("answer lost", "written offline"):
                assert [m["text"] for m in seen["cut"]].count(text) == 1
            assert rejoined == ["cut"]
            assert len(await api.all_messages("cut")) == 15
            await writer.close()
            await cut_off.close()
        await net.close()

    asyncio.run(main())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_messages_sent_across_a_restart_arrive_exactly_once_in_order_everywhere(start_server: Any, sig: int) -> None:
    server = start_server("--user-rate-per-second", "0", "--rate-per-second", "0", "--recovery-limit", "20")
    count = 300
    servers = [server]

    async def main() -> None:
        sender = await connected(server.url, "sender")
        subscribers = [await connected(server.url, "sub1"), await connected(server.url, "sub2")]
        seen = [recorder(s) for s in subscribers]
        offline: List[Dict[str, Any]] = []
        sender.on("state", lambda e: offline.append(e) if e["state"] == "offline" else None)
        for client in (sender, *subscribers):
            await within(client.join("restart"), "join")

        texts = [f"message {i}" for i in range(count)]
        acked = 0
        restart: List["asyncio.Future[None]"] = []
        loop = asyncio.get_running_loop()

        async def restart_server() -> None:
            servers.append(await loop.run_in_executor(None, servers[-1].restart, sig))

        async def one(text: str) -> Dict[str, Any]:
            nonlocal acked
            ack = await sender.send("restart", text)
            acked += 1
            if acked == 100:
                restart.append(asyncio.ensure_future(restart_server()))
            return ack

        in_flight = asyncio.Semaphore(16)

        async def limited(text: str) -> Dict[str, Any]:
            async with in_flight:
                return await one(text)

        acks = await within(asyncio.gather(*(limited(t) for t in texts)), "every send to be acknowledged", 60)
        await within(restart[0], "the restart")
        assert offline, "the sender saw the connection go"
        assert len({a["seq"] for a in acks}) == count

        async with Rest(servers[-1].url) as api:
            stored = await api.all_messages("restart")
        assert len(stored) == count
        assert sorted(m["text"] for m in stored) == sorted(texts)
        assert [m["seq"] for m in stored] == list(range(1, count + 1))
        for i, messages in enumerate(seen):
            await eventually(lambda: len(messages.get("restart", [])) >= count, f"subscriber {i + 1} to see all", 30)
            await asyncio.sleep(0.2)
            got = messages["restart"]
            assert [m["seq"] for m in got] == [m["seq"] for m in stored]
            assert [m["text"] for m in got] == [m["text"] for m in stored]
        for client in (sender, *subscribers):
            await client.close()

    try:
        asyncio.run(main())
    finally:
        for s in servers[1:]:
            s.stop()


def test_unknown_event_types_reach_their_handlers_untouched() -> None:
    """A fake server on a real socket sends an event type this SDK does not know."""
    import json

    from websockets.asyncio.server import serve

    future = {"type": "edited", "room": "r", "seq": 1, "text": "new", "extra": {"nested": [1, 2]}}

    async def handler(ws: Any) -> None:
        await ws.send(json.dumps({"type": "welcome", "protocol": 1, "server": "fake", "user": {"id": "g_a", "name": "a"},
                                  "session": "s", "limits": {"max_frame_bytes": 65536, "max_text_chars": 4000}}))
        async for raw in ws:
            frame = json.loads(raw)
            if frame["op"] == "ping":
                await ws.send(json.dumps(future))
            await ws.send(json.dumps({"type": "reply", "id": frame["id"], "ok": True, "echoed": frame}))

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0) as fake:
            port = fake.sockets[0].getsockname()[1]
            client = await connected(f"ws://127.0.0.1:{port}/ws", "a")
            typed: List[Dict[str, Any]] = []
            anything: List[Dict[str, Any]] = []
            client.on("edited", typed.append)
            client.on("*", anything.append)

            async def failing(_: Dict[str, Any]) -> None:
                raise RuntimeError("a handler that fails does not stop the others")

            client.on("edited", failing)
            await within(client.ping(), "ping")
            await eventually(lambda: typed, "the edited event")
            assert typed == [future]
            assert any(e["type"] == "edited" for e in anything)
            # An op added later is one call away.
            reply = await within(client.request("edit", room="r", seq=1, text="new"), "edit")
            assert {k: v for k, v in reply["echoed"].items() if k != "id"} == {"op": "edit", "room": "r", "seq": 1, "text": "new"}
            await client.close()

    asyncio.run(main())


def test_rest_calls(start_server: Any) -> None:
    server = start_server()

    async def main() -> None:
        async with Rest(server.url) as api:
            created = await api.create_room("rest-room", topic="about rest")
            assert created["room"] == "rest-room" and created["topic"] == "about rest"
            with pytest.raises(BavardError) as taken:
                await api.create_room("rest-room")
            assert (taken.value.code, taken.value.status) == ("conflict", 409)
            first = await api.publish("rest-room", "from a backend", from_name="bot", idempotency_key="k-1")
            again = await api.publish("rest-room", "from a backend", from_name="bot", idempotency_key="k-1")
            assert first["seq"] == again["seq"] == 1 and again.get("duplicate") is True
            page = await api.messages("rest-room")
            assert [(m["text"], m["from"]["id"]) for m in page["messages"]] == [("from a backend", "api:bot")]
            assert (await api.room("rest-room"))["last_seq"] == 1
            assert any(r["room"] == "rest-room" for r in (await api.rooms())["rooms"])
            assert (await api.update_room("rest-room", slow_mode_secs=5))["slow_mode_secs"] == 5
            assert (await api.members("rest-room"))["member_count"] == 0
            assert (await api.add_member("rest-room", "u_x", "moderator"))["role"] == "moderator"
            await api.remove_member("rest-room", "u_x")
            assert (await api.ban("rest-room", "u_y", duration_secs=60, reason="spam"))["user"] == "u_y"
            await api.unban("rest-room", "u_y")
            await api.mute("rest-room", "u_y")
            await api.unmute("rest-room", "u_y")
            await api.kick("rest-room", "u_y", reason="out")
            actions = [e["action"] for e in (await api.audit("rest-room"))["entries"]]
            assert actions[:3] == ["kick", "unmute", "mute"] and "create" in actions
            with pytest.raises(BavardError) as missing:
                await api.room("no-such-room")
            assert (missing.value.code, missing.value.status) == ("not_found", 404)

    asyncio.run(main())
