#!/usr/bin/env python3
"""Slow-loris against a running Bavard server (loopback only): prints how long a silent
and a drip-fed connection stay open, how many of a crowd of silent connections the
server still holds, and how fast a normal request is served meanwhile.

    bavard --listen 127.0.0.1:8000 --db /tmp/sl.db &
    python3 bench/slowloris.py 127.0.0.1:8000 --crowd 3000

Standard library only. Every wait is bounded; it stops by itself.
"""

import argparse
import asyncio
import time


async def closed_after(reader, limit):
    """Seconds until the server closes the connection, or None past `limit`."""
    started = time.monotonic()
    try:
        while True:
            data = await asyncio.wait_for(reader.read(1024), limit - (time.monotonic() - started))
            if not data:
                return time.monotonic() - started
    except asyncio.TimeoutError:  # first: it is an OSError since Python 3.11
        return None
    except (ConnectionError, OSError):
        return time.monotonic() - started


async def silent(host, port, limit):
    reader, writer = await asyncio.open_connection(host, port)
    took = await closed_after(reader, limit)
    writer.close()
    return took


async def drip(host, port, limit, interval):
    """One header byte every `interval` seconds, a head that would take minutes."""
    reader, writer = await asyncio.open_connection(host, port)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Drip: " + b"a" * 200 + b"\r\n\r\n"

    async def feed():
        for byte in head:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except (ConnectionError, OSError):
                return
            await asyncio.sleep(interval)

    feeding = asyncio.create_task(feed())
    took = await closed_after(reader, limit)
    feeding.cancel()
    writer.close()
    return took


async def healthz(host, port):
    """Seconds for one GET /healthz on a new connection, and its status line."""
    started = time.monotonic()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return time.monotonic() - started, answer.split(b"\r\n", 1)[0].decode()


async def crowd(host, port, count, limit):
    """Opens `count` silent connections; reports how many are open after 1 s, the
    latency of a normal request meanwhile, and when the last one was closed."""
    conns = []
    for _ in range(count):
        try:
            conns.append(await asyncio.wait_for(asyncio.open_connection(host, port), 10))
        except (OSError, asyncio.TimeoutError):
            break
    opened = len(conns)
    await asyncio.sleep(1)
    checks = [asyncio.create_task(closed_after(reader, 0.05)) for reader, _ in conns]
    still_open = sum(1 for took in await asyncio.gather(*checks) if took is None)
    latency, status = await healthz(host, port)
    started = time.monotonic()
    remaining = [asyncio.create_task(closed_after(reader, limit)) for reader, _ in conns]
    times = await asyncio.gather(*remaining)
    for _, writer in conns:
        writer.close()
    never = sum(1 for took in times if took is None)
    last = max((t for t in times if t is not None), default=0.0)
    return opened, still_open, latency, status, never, time.monotonic() - started if never == 0 else None, last


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("addr", help="HOST:PORT of the server (loopback)")
    parser.add_argument("--crowd", type=int, default=3000, help="silent connections opened at once")
    parser.add_argument("--limit", type=float, default=60, help="longest wait for a close, seconds")
    args = parser.parse_args()
    host, port = args.addr.rsplit(":", 1)
    assert host in ("127.0.0.1", "localhost", "::1"), "loopback only"
    took = await silent(host, port, args.limit)
    print(f"silent connection closed after: {took:.2f} s" if took else f"silent connection: open after {args.limit} s")
    took = await drip(host, port, args.limit, 2.0)
    print(f"drip-fed connection (1 byte / 2 s) closed after: {took:.2f} s" if took else
          f"drip-fed connection: open after {args.limit} s")
    opened, still_open, latency, status, never, _, last = await crowd(host, port, args.crowd, args.limit)
    print(f"crowd: {opened} silent connections opened, {still_open} still open after 1 s")
    print(f"a normal request meanwhile: {status!r} in {latency * 1000:.1f} ms")
    print(f"crowd: {opened - never} closed by the server (the last {last:.2f} s after the check), "
          f"{never} still open after {args.limit} s")


if __name__ == "__main__":
    asyncio.run(main())
