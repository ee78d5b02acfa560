// The web client survives a server restart: a message sent while the server is down
// is kept (greyed), resent with the same key once it is back, and arrives exactly
// once; the other person misses nothing and sees nothing twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  contiguous,
  eventually,
  joinRoom,
  launchBrowser,
  login,
  openPage,
  outputDir,
  send,
  shownMessages,
  startServer,
  tempDir,
  waitForMessage,
  waitOnline,
  within,
} from './helpers.mjs';

test('a message sent while the server restarts arrives exactly once', async (t) => {
  const tmp = tempDir();
  const db = path.join(tmp.dir, 't.db');
  let server = await startServer({ db });
  const browser = await launchBrowser();
  t.after(async () => {
    await within(browser.close(), 'Chromium to close').catch(() => {});
    await server.stop();
    tmp.cleanup();
  });

  const { page: alice } = await openPage(browser, server);
  const { page: bob } = await openPage(browser, server);
  await login(alice, 'alice');
  await joinRoom(alice, 'ops');
  await login(bob, 'bob');
  await joinRoom(bob, 'ops');
  await send(alice, 'before 1');
  await send(bob, 'before 2');
  await waitForMessage(alice, 'before 2');
  await waitForMessage(bob, 'before 1');

  // Stop the server; the pages notice and say so.
  const addr = server.addr;
  const stopped = await server.stop('SIGTERM');
  assert.equal(stopped.code, 0, `bavard exited with ${JSON.stringify(stopped)}`);
  for (const page of [alice, bob]) await page.locator('#conn-status[data-state="offline"]').waitFor();

  // Alice writes meanwhile: the message waits, greyed.
  const text = 'sent while the server was down';
  await send(alice, text);
  const waiting = alice.locator('#pending > li.pending', { hasText: text });
  await waiting.waitFor();
  assert.equal(await alice.locator('#messages .msg-text', { hasText: text }).count(), 0);
  await alice.screenshot({ path: path.join(outputDir(), 'chat-offline.png') });

  // The server comes back on the same port and database.
  server = await startServer({ db, listen: addr });
  assert.equal(server.addr, addr);
  await waitOnline(alice);
  await waitOnline(bob);
  await waitForMessage(bob, text);
  await waiting.waitFor({ state: 'detached' });
  await waitForMessage(alice, text);

  // Life goes on after the restart.
  await send(bob, 'after');
  await waitForMessage(alice, 'after');

  // Give a duplicate, if any, the time to show up; then count.
  await new Promise((r) => setTimeout(r, 1000));
  const expected = ['before 1', 'before 2', text, 'after'];
  for (const [who, page] of [['alice', alice], ['bob', bob]]) {
    const shown = await shownMessages(page);
    assert.deepEqual(shown.map((m) => m.text), expected, who);
    assert.deepEqual(shown.map((m) => m.seq), [1, 2, 3, 4], who);
    assert.ok(contiguous(shown), who);
    assert.equal(await page.locator('#pending > li').count(), 0, who);
  }

  // And a reload shows the same history from the server.
  await bob.reload();
  await waitOnline(bob);
  await waitForMessage(bob, 'after');
  const reloaded = await eventually(async () => {
    const shown = await shownMessages(bob);
    return shown.length === 4 && shown;
  }, 'the reloaded history');
  assert.deepEqual(reloaded.map((m) => m.text), expected);
  assert.deepEqual(alice.errors, []);
  assert.deepEqual(bob.errors, []);
});
