// Test helpers: the real `bavard` binary as a child process (BAVARD_BIN, else built
// with cargo), clients on Node's `ws`, a TCP proxy that can cut the network, and
// time limits on every wait.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { Client, connect } from '../dist/bavard.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '..', '..', '..');
export const WAIT_MS = 20000;

let built = null;
/// The server binary: BAVARD_BIN, or `cargo build -p bavard`'s.
export function bavardBin() {
  if (process.env.BAVARD_BIN) return process.env.BAVARD_BIN;
  if (!built) {
    const out = execFileSync('cargo', ['build', '-p', 'bavard', '--message-format=json'], {
      cwd: ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 256 * 1024 * 1024,
    });
    for (const line of out.split('\n')) {
      if (!line.startsWith('{')) continue;
      const artifact = JSON.parse(line);
      if (artifact.reason === 'compiler-artifact' && artifact.target?.name === 'bavard' && artifact.executable) {
        built = artifact.executable;
      }
    }
    if (!built) throw new Error('cargo build -p bavard produced no bavard executable');
  }
  return built;
}

export function tempDir() {
  const dir = mkdtempSync(path.join(tmpdir(), 'bavard-js-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/// Runs `promise`, failing with `what` if it takes longer than `ms`.
export async function within(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/// Waits until `predicate()` is truthy; resolves with its value.
export async function eventually(predicate, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/// Starts `bavard --listen LISTEN --db DB ARGS` and resolves once it logs its address.
export async function startServer({ db, listen = '127.0.0.1:0', args = [] }) {
  const child = spawn(bavardBin(), ['--listen', listen, '--db', db, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, BAVARD_LOG: process.env.BAVARD_LOG || 'info' },
  });
  const log = [];
  let exited = null;
  const exit = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  const addr = await within(
    new Promise((resolve, reject) => {
      let buffered = '';
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (chunk) => {
        buffered += chunk;
        let newline;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          log.push(line);
          // eslint-disable-next-line no-control-regex
          const found = /Bavard listening on https?:\/\/(\S+)/.exec(line.replace(/\u001b\[[0-9;]*m/g, ''));
          if (found) resolve(found[1]);
        }
      });
      child.on('error', reject);
      exit.then((e) => reject(new Error(`bavard exited early (${JSON.stringify(e)}):\n${log.join('\n')}`)));
    }),
    'bavard to report its address',
  );
  return {
    addr,
    url: `http://${addr}`,
    log,
    get exited() {
      return exited;
    },
    async stop(signal = 'SIGTERM') {
      if (exited) return exited;
      child.kill(signal);
      try {
        return await within(exit, `bavard to exit after ${signal}`);
      } catch (e) {
        child.kill('SIGKILL');
        await within(exit, 'bavard to exit after SIGKILL');
        throw e;
      }
    },
  };
}

/// Quick reconnects for tests.
export const FAST = { WebSocket, minBackoffMs: 50, maxBackoffMs: 500, requestTimeoutMs: 10000 };

export function client(url, name, options = {}) {
  return new Client({ url, name, ...FAST, ...options });
}

export function connected(url, name, options = {}) {
  return within(connect({ url, name, ...FAST, ...options }), `${name} to connect`);
}

/// Records the `message` events of a client, per room.
export function recorder(c) {
  const seen = new Map();
  c.on('message', (m) => {
    if (!seen.has(m.room)) seen.set(m.room, []);
    seen.get(m.room).push(m);
  });
  return (room) => seen.get(room) || [];
}

/// A TCP proxy to `target` ("host:port") on a port of its own; `cut()` drops every
/// connection and refuses new ones until `restore()`; `deafen()` stops passing what the
/// server sends (the client's frames still reach it), until the next `cut()`.
export async function proxy(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const sockets = new Set();
  let down = false;
  let deaf = false;
  const server = net.createServer((inbound) => {
    if (down) {
      inbound.destroy();
      return;
    }
    const outbound = net.connect(port, host);
    sockets.add(inbound);
    sockets.add(outbound);
    inbound.pipe(outbound);
    outbound.on('data', (chunk) => {
      if (!deaf) inbound.write(chunk);
    });
    const close = () => {
      inbound.destroy();
      outbound.destroy();
      sockets.delete(inbound);
      sockets.delete(outbound);
    };
    inbound.on('error', close);
    outbound.on('error', close);
    inbound.on('close', close);
    outbound.on('close', close);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    deafen() {
      deaf = true;
    },
    cut() {
      down = true;
      deaf = false;
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    },
    restore() {
      down = false;
    },
    close() {
      for (const socket of sockets) socket.destroy();
      sockets.clear();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
