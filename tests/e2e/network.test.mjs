// The web client survives a network cut while the server stays up: it reconnects,
// rejoins with `since`, pages the rest with `history` when the server recovers only
// part of the gap (the server runs with --recovery-limit 5 here), and resends what it
// could not send. Playwright's WebSocket routing stands in for the network: it passes
// frames through, and the test cuts the connection and refuses new ones for a while.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  contiguous,
  joinRoom,
  launchBrowser,
  login,
  openPage,
  seedMessages,
  send,
  shownMessages,
  startServer,
  tempDir,
  waitForMessage,
  waitOnline,
  within,
} from './helpers.mjs';

test('after a network cut, nothing is missing or duplicated', async (t) => {
  const tmp = tempDir();
  const server = await startServer({ db: path.join(tmp.dir, 't.db'), args: ['--recovery-limit', '5'] });
  const browser = await launchBrowser();
  t.after(async () => {
    await within(browser.close(), 'Chromium to close').catch(() => {});
    await server.stop();
    tmp.cleanup();
  });

  const { page: alice } = await openPage(browser, server);
  let cut = false;
  const live = [];
  await alice.routeWebSocket(/\/ws\?/, (ws) => {
    if (cut) {
      ws.close({ code: 4000, reason: 'network down (test)' });
      return;
    }
    live.push({ ws, server: ws.connectToServer() });
  });
  await login(alice, 'alice');
  await joinRoom(alice, 'cut');
  await joinRoom(alice, 'elsewhere'); // so #cut counts unread messages
  const { page: bob } = await openPage(browser, server);
  await login(bob, 'bob');
  await joinRoom(bob, 'cut');
  await send(bob, 'before the cut');
  await alice.locator('#room-list button[data-room="cut"] .badge', { hasText: '1' }).waitFor();

  // The network goes down for alice.
  cut = true;
  for (const { ws, server: upstream } of live.splice(0)) {
    await upstream.close().catch(() => {});
    await ws.close({ code: 4000, reason: 'network down (test)' }).catch(() => {});
  }
  await alice.locator('#conn-status[data-state="offline"]').waitFor();
  await alice.locator('#room-list button[data-room="cut"]').click();
  await send(alice, 'written offline');
  await alice.locator('#pending > li', { hasText: 'written offline' }).waitFor();

  // Meanwhile the room moves on: 12 messages, more than the server recovers in a join.
  assert.equal(await seedMessages(bob, 'cut', 12, 'missed'), 12);
  await waitForMessage(bob, 'missed 11');

  // The network comes back; alice's backoff finds it.
  cut = false;
  await alice.getByRole('button', { name: 'Reconnect now' }).click().catch(() => {});
  await waitOnline(alice);
  await waitForMessage(alice, 'written offline');
  await waitForMessage(bob, 'written offline');
  await alice.locator('#pending > li').first().waitFor({ state: 'detached' });
  await new Promise((r) => setTimeout(r, 500));

  const onAlice = await shownMessages(alice);
  const onBob = await shownMessages(bob);
  assert.deepEqual(onAlice, onBob);
  assert.equal(onAlice.length, 14);
  assert.ok(contiguous(onAlice), JSON.stringify(onAlice.map((m) => m.seq)));
  assert.equal(onAlice.filter((m) => m.text === 'written offline').length, 1);
  for (let i = 0; i < 12; i += 1) assert.ok(onAlice.some((m) => m.text === `missed ${i}`), `missed ${i}`);
  assert.deepEqual(alice.errors, []);
});
