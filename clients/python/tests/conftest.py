"""Test helpers: the real ``bavard`` binary (BAVARD_BIN, else built with cargo), a TCP
proxy that can cut the network, and time limits on every wait."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal as signals
import subprocess
import threading
from pathlib import Path
from typing import Any, Awaitable, Callable, List, Optional, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[3]
WAIT = 20.0
T = TypeVar("T")
_built: Optional[str] = None


def bavard_bin() -> str:
    """BAVARD_BIN, or the binary ``cargo build -p bavard`` makes."""
    global _built
    if os.environ.get("BAVARD_BIN"):
        return os.environ["BAVARD_BIN"]
    if _built is None:
        out = subprocess.run(["cargo", "build", "-p", "bavard", "--message-format=json"], cwd=ROOT,
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        for line in out.splitlines():
            if line.startswith("{"):
                artifact = json.loads(line)
                if artifact.get("reason") == "compiler-artifact" and artifact.get("target", {}).get("name") == "bavard" \
                        and artifact.get("executable"):
                    _built = artifact["executable"]
        if _built is None:
            raise RuntimeError("cargo build -p bavard produced no bavard executable")
    return _built


class Server:
    """``bavard --listen LISTEN --db DB ARGS`` as a child process."""

    def __init__(self, db: Path, args: List[str], listen: str = "127.0.0.1:0") -> None:
        self.db, self.args = db, args
        self.log: List[str] = []
        self.process = subprocess.Popen([bavard_bin(), "--listen", listen, "--db", str(db), *args],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True, env={**os.environ, "BAVARD_LOG": os.environ.get("BAVARD_LOG", "info")})
        found = threading.Event()
        self.addr = ""

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.log.append(line.rstrip("\n"))
                match = re.search(r"Bavard listening on https?://(\S+)", re.sub(r"\x1b\[[0-9;]*m", "", line))
                if match and not found.is_set():
                    self.addr = match.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(WAIT):
            self.process.kill()
            raise RuntimeError("bavard did not report its address:\n" + "\n".join(self.log))

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def stop(self, sig: int = signals.SIGTERM) -> Optional[int]:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(WAIT)
        return self.process.returncode

    def restart(self, sig: int = signals.SIGTERM) -> "Server":
        """Stops it and starts it again on the same address and database."""
        self.stop(sig)
        return Server(self.db, self.args, listen=self.addr)


@pytest.fixture
def start_server(tmp_path: Path) -> Any:
    servers: List[Server] = []

    def start(*args: str, db: str = "t.db") -> Server:
        server = Server(tmp_path / db, list(args))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


async def within(awaitable: Awaitable[T], what: str, seconds: float = WAIT) -> T:
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out after {seconds} s: {what}") from None


async def eventually(predicate: Callable[[], Any], what: str, seconds: float = WAIT) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {seconds} s: {what}")
        await asyncio.sleep(0.05)


class Proxy:
    """A TCP proxy to ``target`` on a port of its own: ``cut()`` drops every connection and
    refuses new ones until ``restore()``; ``deafen()`` stops passing what the server sends
    (the client's frames still reach it) until the next ``cut()``."""

    def __init__(self, target: str) -> None:
        self.host, port = target.rsplit(":", 1)
        self.port = int(port)
        self.down = False
        self.deaf = False
        self.writers: List[asyncio.StreamWriter] = []
        self.server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> "Proxy":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return
        self.writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_server: bool) -> None:
            try:
                while True:
                    chunk = await src.read(65536)
                    if not chunk:
                        break
                    if not (from_server and self.deaf):
                        dst.write(chunk)
                        await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                for w in (writer, up_writer):
                    w.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

    def deafen(self) -> None:
        self.deaf = True

    def cut(self) -> None:
        self.down = True
        self.deaf = False
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    def restore(self) -> None:
        self.down = False

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
