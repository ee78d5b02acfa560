// The JavaScript SDK against the real server: requests and events, typed errors,
// recovery after a network cut and a restart, nothing lost and nothing twice.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { BavardError, Client, endpoint } from '../dist/bavard.js';
import { client, connected, eventually, FAST, proxy, recorder, startServer, tempDir, within } from './helpers.mjs';

/// Every stored message of `room`, oldest first, read with `history` pages.
async function stored(c, room) {
  const all = [];
  for (;;) {
    const page = await within(c.history(room, { after: all.length ? all[all.length - 1].seq : 0, limit: 200 }), 'history');
    all.push(...page.messages);
    if (!page.has_more) return all;
  }
}

function seqsFrom(messages, first, last) {
  return messages.map((m) => m.seq).join(',') === Array.from({ length: last - first + 1 }, (_, i) => first + i).join(',');
}

describe('against one server', () => {
  let tmp;
  let server;
  const clients = [];
  const track = (c) => {
    clients.push(c);
    return c;
  };

  before(async () => {
    tmp = tempDir();
    server = await startServer({
      db: path.join(tmp.dir, 't.db'),
      args: ['--user-rate-per-second', '0', '--recovery-limit', '5'],
    });
  });

  after(async () => {
    for (const c of clients) c.close();
    if (server) await server.stop();
    if (tmp) tmp.cleanup();
  });

  test('endpoint() makes the WebSocket URL with the identity', () => {
    assert.equal(endpoint('http://127.0.0.1:8000', 'al ice'), 'ws://127.0.0.1:8000/ws?name=al+ice');
    assert.equal(endpoint('https://chat.example.com/', undefined, 't.k'), 'wss://chat.example.com/ws?token=t.k');
    assert.equal(endpoint('ws://h:1/ws?name=old', 'new'), 'ws://h:1/ws?name=new');
    assert.throws(() => endpoint('ftp://h/'), (e) => e instanceof BavardError && /unsupported scheme/.test(e.message));
  });

  test('join, send, events, history, members, typing and leave', async () => {
    const alice = track(await connected(server.url, 'alice'));
    const bob = track(await connected(server.url, 'bob'));
    assert.equal(alice.welcome.user.id, 'g_alice');
    const onBob = recorder(bob);
    const presence = [];
    alice.on('presence', (e) => presence.push(e));
    const typing = [];
    bob.on('typing', (e) => typing.push(e));

    const first = await within(alice.join('basics'), 'alice joins');
    assert.equal(first.seq, 0);
    assert.deepEqual(first.members.map((u) => u.name), ['alice']);
    await within(bob.join('basics'), 'bob joins');
    await eventually(() => presence.some((e) => e.joined?.some((u) => u.name === 'bob')), 'alice to see bob come');

    const acks = [];
    for (const text of ['one', 'two', 'three']) acks.push(await within(alice.send('basics', text), `send ${text}`));
    assert.deepEqual(acks.map((a) => a.seq), [1, 2, 3]);
    assert.match(acks[0].ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    await eventually(() => onBob('basics').length === 3, 'bob to get three messages');
    assert.deepEqual(onBob('basics').map((m) => [m.seq, m.text, m.from.name]), [
      [1, 'one', 'alice'],
      [2, 'two', 'alice'],
      [3, 'three', 'alice'],
    ]);

    // The same key twice is stored once.
    const again = await within(alice.send('basics', 'one', { key: 'fixed-key' }), 'keyed send');
    const repeat = await within(alice.send('basics', 'one', { key: 'fixed-key' }), 'repeated keyed send');
    assert.equal(repeat.seq, again.seq);
    assert.equal(repeat.duplicate, true);

    const page = await within(alice.history('basics', { before: 3, limit: 1 }), 'history');
    assert.deepEqual(page.messages.map((m) => m.text), ['two']);
    assert.equal(page.has_more, true);
    const members = await within(alice.members('basics'), 'members');
    assert.equal(members.member_count, 2);

    await within(alice.typing('basics'), 'typing');
    await eventually(() => typing.some((e) => e.user.name === 'alice'), 'bob to see alice typing');

    // A later join without `since` hands the latest messages in the reply.
    const carol = track(await connected(server.url, 'carol'));
    const joined = await within(carol.join('basics', { limit: 2 }), 'carol joins');
    assert.deepEqual(joined.messages.map((m) => m.seq), [3, 4]);

    await within(bob.leave('basics'), 'bob leaves');
    await within(alice.send('basics', 'after bob left'), 'send');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(onBob('basics').length, 4);
  });

  test('errors carry the protocol code; other ops go through request()', async () => {
    const dave = track(await connected(server.url, 'dave'));
    await within(dave.join('errors'), 'join');
    const tooLong = 'x'.repeat(dave.welcome.limits.max_text_chars + 1);
    await assert.rejects(dave.send('errors', tooLong), (e) => e instanceof BavardError && e.code === 'too_large' && e.fromServer);
    await assert.rejects(dave.request('no_such_op', {}), (e) => e.code === 'unknown_op');
    await assert.rejects(dave.history('bad name!'), (e) => e.code === 'bad_request');
    await assert.rejects(dave.send('not-joined', 'hi'), (e) => e.code === 'forbidden');
    // Moderation ops: a guest creates public rooms only.
    assert.deepEqual(await within(dave.create('made-by-dave', { topic: 'hi' }), 'create'), {
      room: 'made-by-dave',
      kind: 'public',
      topic: 'hi',
    });
    await assert.rejects(dave.create('made-by-dave'), (e) => e.code === 'conflict');
    await assert.rejects(dave.create('secret', { kind: 'private' }), (e) => e.code === 'forbidden');
    await assert.rejects(dave.request('add_member', { room: 'made-by-dave', user: 'u_x' }), (e) => e.code === 'forbidden');
    await assert.rejects(dave.refresh('abc'), (e) => e.code === 'bad_request');

    // A send that waited for a join the server refuses fails with the refusal too.
    const created = await within(
      fetch(`${server.url}/api/rooms`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'private-room', kind: 'private' }),
      }),
      'create a private room',
    );
    assert.equal(created.status, 201);
    const joining = dave.join('private-room');
    const sending = dave.send('private-room', 'let me in');
    await assert.rejects(within(joining, 'the join'), (e) => e.code === 'forbidden');
    await assert.rejects(within(sending, 'the send'), (e) => e.code === 'forbidden');
    assert.equal(dave.unacknowledged, 0);
  });

  test('a refused connection fails connect() with the HTTP status, and is not retried', async () => {
    await assert.rejects(
      connected(server.url, 'x'.repeat(40)),
      (e) => e instanceof BavardError && e.code === 'refused' && e.status === 400,
    );
  });

  test('join with since hands out every later message once, paging past the recovery limit', async () => {
    const writer = track(await connected(server.url, 'writer'));
    await within(writer.join('backlog'), 'join');
    for (let i = 1; i <= 23; i += 1) await within(writer.send('backlog', `m${i}`), 'send');
    const reader = track(await connected(server.url, 'reader'));
    const seen = recorder(reader);
    const reply = await within(reader.join('backlog', { since: 3 }), 'join since');
    assert.equal(reply.recovered, false); // 20 missed, the server returns 5
    assert.deepEqual(reply.messages, []);
    await eventually(() => seen('backlog').length === 20, 'the 20 missed messages');
    assert.ok(seqsFrom(seen('backlog'), 4, 23), JSON.stringify(seen('backlog').map((m) => m.seq)));
    assert.equal(reader.lastSeq('backlog'), 23);
  });

  test('after a network cut: reconnects, recovers the gap with history, resends what it wrote', async () => {
    const net = await proxy(server.addr);
    const writer = track(await connected(server.url, 'writer2'));
    const cutOff = track(await connected(net.url, 'cutoff'));
    const seen = recorder(cutOff);
    const states = [];
    cutOff.on('state', (e) => states.push(e.state));
    const rejoined = [];
    cutOff.on('rejoined', (e) => rejoined.push(e.room));
    await within(writer.join('cut'), 'join');
    await within(cutOff.join('cut'), 'join');
    await within(writer.send('cut', 'before'), 'send');
    await eventually(() => seen('cut').length === 1, 'the first message');

    // The server stores this one, but its answer is lost with the connection.
    net.deafen();
    const unanswered = cutOff.send('cut', 'answer lost');
    await eventually(async () => (await stored(writer, 'cut')).length === 2, 'the server to store it');
    net.cut();
    await eventually(() => states.includes('offline'), 'the cut to be noticed');
    const offline = cutOff.send('cut', 'written offline');
    for (let i = 1; i <= 12; i += 1) await within(writer.send('cut', `missed ${i}`), 'send');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(cutOff.unacknowledged, 2);
    net.restore();

    // Resent with the same key: the server answers the original seq.
    const first = await within(unanswered, 'the unanswered message to be acknowledged');
    assert.deepEqual([first.seq, first.duplicate], [2, true]);
    const ack = await within(offline, 'the offline message to be stored');
    assert.equal(ack.seq, 15);
    await eventually(() => seen('cut').length === 15, 'every message after the cut');
    assert.ok(seqsFrom(seen('cut'), 1, 15), JSON.stringify(seen('cut').map((m) => m.seq)));
    for (const text of ['answer lost', 'written offline']) assert.equal(seen('cut').filter((m) => m.text === text).length, 1, text);
    assert.deepEqual(rejoined, ['cut']);
    const all = await stored(writer, 'cut');
    assert.equal(all.length, 15);
    await net.close();
  });

  test('a client made while the server is unreachable connects when it comes', async () => {
    const net = await proxy(server.addr);
    net.cut();
    const late = track(client(net.url, 'late'));
    const joined = late.join('late-room');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(late.connected, false);
    net.restore();
    const reply = await within(joined, 'the join once reachable');
    assert.equal(reply.room, 'late-room');
    await net.close();
  });
});

describe('a fake server (no network)', () => {
  /// A WebSocket stand-in: hands the client's frames to `serve`, which answers with `push`.
  function fakeSocket(serve) {
    return class FakeSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        setTimeout(() => {
          this.readyState = 1;
          this.onopen?.({});
          this.push({ type: 'welcome', protocol: 1, server: 'fake', user: { id: 'g_a', name: 'a' }, session: 's', limits: { max_frame_bytes: 65536, max_text_chars: 4000 } });
        }, 0);
      }
      push(frame) {
        setTimeout(() => this.onmessage?.({ data: JSON.stringify(frame) }), 0);
      }
      send(text) {
        serve(JSON.parse(text), (frame) => this.push(frame));
      }
      close() {
        this.readyState = 3;
      }
    };
  }

  test('events of types this SDK does not know reach their handlers untouched', async () => {
    const future = { type: 'edited', room: 'r', seq: 1, text: 'new', extra: { nested: [1, 2] } };
    const FakeSocket = fakeSocket((frame, push) => {
      if (frame.op === 'ping') {
        push(future);
        push({ type: 'reply', id: frame.id, ok: true });
      }
    });
    const c = new Client({ url: 'http://fake', name: 'a', ...FAST, WebSocket: FakeSocket });
    const typed = [];
    const any = [];
    c.on('edited', (e) => typed.push(e));
    c.on('*', (e) => any.push(e));
    await within(c.ping(), 'ping');
    await eventually(() => typed.length === 1, 'the edited event');
    assert.deepEqual(typed[0], future);
    assert.ok(any.some((e) => e.type === 'edited'));
    assert.ok(any.some((e) => e.type === 'welcome'));
    // An op added later is one call away, with its reply's fields.
    const FakeEdit = fakeSocket((frame, push) => push({ type: 'reply', id: frame.id, ok: true, echoed: frame }));
    const d = new Client({ url: 'http://fake', name: 'a', ...FAST, WebSocket: FakeEdit });
    const reply = await within(d.request('edit', { room: 'r', seq: 1, text: 'new' }), 'edit');
    assert.deepEqual(reply.echoed, { op: 'edit', room: 'r', seq: 1, text: 'new', id: reply.echoed.id });
    c.close();
    d.close();
  });

  test('a failing handler does not stop the others', async () => {
    const errors = [];
    const FakeSocket = fakeSocket((frame, push) => push({ type: 'reply', id: frame.id, ok: true }));
    const c = new Client({ url: 'http://fake', ...FAST, WebSocket: FakeSocket, onHandlerError: (e) => errors.push(e) });
    const welcomed = [];
    c.on('welcome', () => {
      throw new Error('boom');
    });
    c.on('welcome', (w) => welcomed.push(w));
    await within(c.ready(), 'ready');
    assert.equal(welcomed.length, 1);
    assert.equal(errors[0].message, 'boom');
    c.close();
    await assert.rejects(c.send('r', 'x'), (e) => e.code === 'closed');
  });
});
