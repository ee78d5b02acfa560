#!/usr/bin/env python3
"""Check that a benchmark peer speaks Bavard's plain-text chat protocol.

    bench/.venv/bin/python bench/peers/check.py NAME PORT [--host 127.0.0.1]

NAME (draft | node-ws | bun | anything) only labels the output. Waits up to
15 s for the port to accept, then checks on ws://HOST:PORT:
  1. two clients on /ws/chat: a text frame "hello" from A reaches A and B as
     "Message reçu : hello", A gets it exactly once, non-ASCII text survives;
  2. when A disconnects, B gets "Un utilisateur s'est déconnecté.";
  3. rooms: /ws/chat/{room} clients only hear their room, and /ws/chat is
     the room "chat".
Exit status 0 when everything holds, 1 otherwise.
"""

import argparse
import asyncio
import sys
import time

import websockets

PREFIX = "Message reçu : "
GOODBYE = "Un utilisateur s'est déconnecté."
TIMEOUT = 5.0
QUIET = 0.3  # how long to wait to be sure nothing more arrives


class CheckFailed(Exception):
    pass


async def connect(base, path):
    return await websockets.connect(base + path, open_timeout=TIMEOUT, max_size=None)


async def expect(ws, want, who):
    try:
        got = await asyncio.wait_for(ws.recv(), TIMEOUT)
    except asyncio.TimeoutError:
        raise CheckFailed(f"{who}: nothing received within {TIMEOUT}s, wanted {want!r}")
    if got != want:
        raise CheckFailed(f"{who}: got {got!r}, wanted {want!r}")


async def expect_nothing(ws, who):
    try:
        got = await asyncio.wait_for(ws.recv(), QUIET)
    except asyncio.TimeoutError:
        return
    raise CheckFailed(f"{who}: unexpected frame {got!r}")


async def wait_for_port(host, port, deadline):
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise CheckFailed(f"{host}:{port} does not accept connections")
            await asyncio.sleep(0.1)


async def run(name, host, port):
    await wait_for_port(host, port, time.monotonic() + 15)
    base = f"ws://{host}:{port}"

    # 1. broadcast to the room, sender included, exactly once.
    a = await connect(base, "/ws/chat")
    b = await connect(base, "/ws/chat")
    await a.send("hello")
    await expect(a, PREFIX + "hello", "A (sender)")
    await expect(b, PREFIX + "hello", "B")
    await expect_nothing(a, "A after its own message")
    await expect_nothing(b, "B after A's message")
    print(f"{name}: ok  /ws/chat broadcast, sender included, once")

    text = "ça marche ✓ — 你好 🎉"
    await b.send(text)
    await expect(a, PREFIX + text, "A")
    await expect(b, PREFIX + text, "B (sender)")
    print(f"{name}: ok  non-ASCII text")

    # 2. disconnect notice.
    await a.close()
    await expect(b, GOODBYE, "B after A closed")
    await expect_nothing(b, "B after the notice")
    print(f"{name}: ok  disconnect notice")

    # 3. rooms.
    r1a = await connect(base, "/ws/chat/r1")
    r1b = await connect(base, "/ws/chat/r1")
    r2 = await connect(base, "/ws/chat/r2")
    chat = await connect(base, "/ws/chat/chat")
    await r1a.send("dans r1")
    await expect(r1a, PREFIX + "dans r1", "r1 sender")
    await expect(r1b, PREFIX + "dans r1", "r1 other")
    await expect_nothing(r2, "r2 while r1 talks")
    await expect_nothing(b, "/ws/chat while r1 talks")
    await r2.send("dans r2")
    await expect(r2, PREFIX + "dans r2", "r2 sender")
    await expect_nothing(r1a, "r1 while r2 talks")
    await b.send("dans chat")
    await expect(b, PREFIX + "dans chat", "/ws/chat sender")
    await expect(chat, PREFIX + "dans chat", "/ws/chat/chat")
    await r1b.close()
    await expect(r1a, GOODBYE, "r1 after the other r1 client closed")
    await expect_nothing(r2, "r2 after an r1 client closed")
    await expect_nothing(b, "/ws/chat after an r1 client closed")
    print(f"{name}: ok  rooms by path (/ws/chat is /ws/chat/chat)")

    for ws in (b, r1a, r2, chat):
        await ws.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("name")
    p.add_argument("port", type=int)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args()
    try:
        asyncio.run(run(args.name, args.host, args.port))
    except (CheckFailed, OSError, websockets.exceptions.WebSocketException) as e:
        print(f"{args.name}: FAIL {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"{args.name}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
