// The server is restarted (killed, or stopped cleanly) while the SDK sends: after it
// returns, every sent message is stored exactly once, and every subscriber saw all of
// them, in order, once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { connected, eventually, recorder, startServer, tempDir, within } from './helpers.mjs';

const COUNT = 300;

for (const signal of ['SIGKILL', 'SIGTERM']) {
  test(`messages sent across a restart (${signal}) arrive exactly once, in order, everywhere`, async (t) => {
    const tmp = tempDir();
    const db = path.join(tmp.dir, 't.db');
    const args = ['--user-rate-per-second', '0', '--rate-per-second', '0', '--recovery-limit', '20'];
    let server = await startServer({ db, args });
    const clients = [];
    t.after(async () => {
      for (const c of clients) c.close();
      await server.stop();
      tmp.cleanup();
    });
    const sender = await connected(server.url, 'sender');
    const subscribers = [await connected(server.url, 'sub1'), await connected(server.url, 'sub2')];
    clients.push(sender, ...subscribers);
    const seen = subscribers.map(recorder);
    const offline = [];
    sender.on('state', (e) => e.state === 'offline' && offline.push(e));
    for (const c of [sender, ...subscribers]) await within(c.join('restart'), 'join');

    // Sends keep going, up to 16 in flight; the server goes down after 100 acks.
    const texts = Array.from({ length: COUNT }, (_, i) => `message ${i}`);
    let acked = 0;
    let restarted = null;
    const addr = server.addr;
    const sends = [];
    for (const text of texts) {
      while (sends.length - acked >= 16) await new Promise((r) => setTimeout(r, 2));
      sends.push(
        sender.send('restart', text).then((ack) => {
          acked += 1;
          if (acked === 100) {
            restarted = (async () => {
              await server.stop(signal);
              await new Promise((r) => setTimeout(r, 300));
              server = await startServer({ db, listen: addr, args });
            })();
          }
          return ack;
        }),
      );
    }
    const acks = await within(Promise.all(sends), 'every send to be acknowledged', 60000);
    await within(restarted, 'the restart');
    assert.ok(offline.length >= 1, 'the sender saw the connection go');

    // Stored once each.
    const seqs = acks.map((a) => a.seq);
    assert.equal(new Set(seqs).size, COUNT, 'each message has its own seq');
    const reader = await connected(server.url, 'reader');
    clients.push(reader);
    const stored = [];
    for (;;) {
      const page = await within(reader.history('restart', { after: stored.length ? stored.at(-1).seq : 0, limit: 200 }), 'history');
      stored.push(...page.messages);
      if (!page.has_more) break;
    }
    assert.equal(stored.length, COUNT);
    assert.deepEqual(stored.map((m) => m.text).sort(), [...texts].sort());
    assert.deepEqual(stored.map((m) => m.seq), Array.from({ length: COUNT }, (_, i) => i + 1));

    // Seen by every subscriber, in seq order, once.
    for (const [i, messages] of seen.entries()) {
      await eventually(() => messages('restart').length >= COUNT, `subscriber ${i + 1} to see every message`, 30000);
      await new Promise((r) => setTimeout(r, 200));
      const got = messages('restart');
      assert.deepEqual(got.map((m) => m.seq), stored.map((m) => m.seq), `subscriber ${i + 1}: seqs`);
      assert.deepEqual(got.map((m) => m.text), stored.map((m) => m.text), `subscriber ${i + 1}: texts`);
    }
  });
}
