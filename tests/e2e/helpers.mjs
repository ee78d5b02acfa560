// Helpers for the end-to-end tests: the real `bavard` binary as a child process, and
// headless Debian Chromium driven by playwright-core. Every wait has a time limit.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '..', '..');
export const BIN = process.env.BAVARD_BIN || path.join(ROOT, 'target', 'debug', 'bavard');
export const OUTPUT = path.join(ROOT, 'test-output');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
/// The longest any single wait may take.
export const WAIT_MS = 15000;

/// A fresh temporary directory, removed by the returned cleanup function.
export function tempDir() {
  const dir = mkdtempSync(path.join(tmpdir(), 'bavard-e2e-'));
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

/// Starts `bavard --listen LISTEN --db DB` and resolves once it logs
/// `Bavard listening on http://ADDR`. `listen` defaults to any free port.
export async function startServer({ db, listen = '127.0.0.1:0', args = [] }) {
  const child = spawn(BIN, ['--listen', listen, '--db', db, ...args], {
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
          // Strip colours in case the log is a terminal-style one.
          // eslint-disable-next-line no-control-regex
          const plain = line.replace(/\u001b\[[0-9;]*m/g, '');
          const found = /Bavard listening on http:\/\/(\S+)/.exec(plain);
          if (found) resolve(found[1]);
        }
      });
      child.on('error', reject);
      exit.then((e) => reject(new Error(`bavard exited early (${JSON.stringify(e)}):\n${log.join('\n')}`)));
    }),
    `bavard (${BIN}) to report its address`,
  );
  const server = {
    addr,
    url: `http://${addr}`,
    db,
    log,
    child,
    get exited() {
      return exited;
    },
    /// Sends `signal` and waits for the process to end; returns {code, signal}.
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
  return server;
}

/// Headless Debian Chromium, with nothing reaching outside this machine.
export function launchBrowser() {
  return within(
    chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    }),
    'Chromium to start',
    30000,
  );
}

/// A new browser context and page at the server's root, with a time limit on every
/// Playwright action and wait.
export async function openPage(browser, server, options = {}) {
  const context = await browser.newContext(options);
  context.setDefaultTimeout(WAIT_MS);
  const page = await context.newPage();
  page.on('pageerror', (error) => {
    page.errors.push(error);
  });
  page.errors = [];
  await page.goto(server.url);
  return { context, page };
}

/// Logs in with `name` and waits for the connection.
export async function login(page, name) {
  await page.getByLabel('Nickname').fill(name);
  await page.getByRole('button', { name: 'Start chatting' }).click();
  await waitOnline(page);
}

export async function waitOnline(page) {
  await page.locator('#conn-status[data-state="online"]').waitFor();
}

/// Joins (or switches to) `room` with the sidebar form and waits for its history.
export async function joinRoom(page, room) {
  await page.getByLabel('Join or create a room').fill(room);
  await page.getByRole('button', { name: 'Join', exact: true }).click();
  await page.locator('#room-title', { hasText: `#${room}` }).waitFor();
  await page.locator('#history-status', { hasNotText: 'Loading messages' }).waitFor();
}

/// Types `text` in the composer and presses Enter.
export async function send(page, text) {
  const box = page.getByRole('textbox', { name: /^Message #/ });
  await box.fill(text);
  await box.press('Enter');
}

/// The messages shown in the current room: [{seq, from, text}], in page order.
export function shownMessages(page) {
  return page.locator('#messages > li').evaluateAll((items) =>
    items.map((li) => ({
      seq: Number(li.dataset.seq),
      from: li.querySelector('.msg-from').textContent,
      text: li.querySelector('.msg-text').textContent,
    })),
  );
}

/// Waits until a message with exactly `text` is shown in the current room.
export async function waitForMessage(page, text) {
  await page.locator('#messages .msg-text', { hasText: new RegExp(`^${escapeRegExp(text)}$`) }).first().waitFor();
}

export function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/// Waits until `predicate()` (async) returns a truthy value; resolves with it.
export async function eventually(predicate, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await predicate();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/// Asserts the seqs are strictly increasing and gap-free.
export function contiguous(messages) {
  return messages.every((m, i) => i === 0 || m.seq === messages[i - 1].seq + 1);
}

export function outputDir() {
  mkdirSync(OUTPUT, { recursive: true });
  return OUTPUT;
}

/// Stores `count` messages in `room` from inside `page` (a raw WebSocket in the
/// browser), spread over a few connections so the per-connection rate limit is never
/// hit. Resolves with the number of acks.
export async function seedMessages(page, room, count, prefix) {
  return page.evaluate(
    async ({ room, count, prefix, connections }) => {
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      const perConnection = Math.ceil(count / connections);
      let next = 0;
      const one = (index) =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(`${scheme}//${location.host}/ws?name=seeder${index}`);
          let acked = 0;
          let mine = [];
          const timer = setTimeout(() => reject(new Error('seeding timed out')), 20000);
          ws.onmessage = (event) => {
            const frame = JSON.parse(event.data);
            if (frame.type === 'welcome') {
              ws.send(JSON.stringify({ op: 'join', room, limit: 0, id: 'join' }));
            } else if (frame.type === 'reply' && frame.id === 'join') {
              mine = [];
              while (mine.length < perConnection && next < count) mine.push(next++);
              if (mine.length === 0) {
                clearTimeout(timer);
                ws.close();
                resolve(0);
              }
              // One at a time, so this connection's messages keep their order.
              const sendNext = () => {
                const i = mine[acked];
                ws.send(JSON.stringify({ op: 'send', room, text: `${prefix} ${i}`, key: `${prefix}-${i}`, id: `s${i}` }));
              };
              ws.sendNext = sendNext;
              sendNext();
            } else if (frame.type === 'reply' && String(frame.id).startsWith('s')) {
              if (!frame.ok) {
                reject(new Error(JSON.stringify(frame.error)));
                return;
              }
              acked += 1;
              if (acked === mine.length) {
                clearTimeout(timer);
                ws.close();
                resolve(acked);
              } else {
                ws.sendNext();
              }
            }
          };
          ws.onerror = () => reject(new Error('seeding connection failed'));
        });
      const counts = await Promise.all(Array.from({ length: connections }, (_, i) => one(i)));
      return counts.reduce((a, b) => a + b, 0);
    },
    { room, count, prefix, connections: Math.max(1, Math.ceil(count / 30)) },
  );
}
