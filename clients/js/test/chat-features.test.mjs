// The chat features of the protocol (edits, deletes, reactions, read positions, search,
// streamed messages, direct rooms) through the SDK's methods, and their recovery: a
// client away while messages change gets them as `changed` events when it comes back.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import path from 'node:path';
import { connected, eventually, proxy, recorder, startServer, tempDir, within } from './helpers.mjs';

/// An HS256 token for `sub`, valid for an hour.
function token(secret, sub) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

describe('chat features', () => {
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
      args: ['--user-rate-per-second', '0', '--jwt-secret', 'test-secret'],
    });
  });

  after(async () => {
    for (const c of clients) c.close();
    if (server) await server.stop();
    if (tmp) tmp.cleanup();
  });

  test('edit, react, delete, read, search and streamed messages, with their events', async () => {
    const alice = track(await connected(server.url, 'alice'));
    const bob = track(await connected(server.url, 'bob'));
    const events = [];
    for (const type of ['edited', 'deleted', 'reaction', 'append', 'finished']) bob.on(type, (e) => events.push(e));
    await within(alice.join('features'), 'join');
    await within(bob.join('features'), 'join');
    const first = await within(alice.send('features', 'helo world'), 'send');
    const second = await within(alice.send('features', 'to be deleted'), 'send');

    const edited = await within(alice.edit('features', first.seq, 'hello world'), 'edit');
    assert.equal(edited.seq, first.seq);
    await within(bob.react('features', first.seq, '👍'), 'react');
    await within(alice.delete('features', second.seq), 'delete');
    await assert.rejects(bob.edit('features', first.seq, 'not mine'), (e) => e.code === 'forbidden');

    const stream = await within(alice.send('features', 'deploying', { stream: true }), 'streamed send');
    await within(alice.append('features', stream.seq, ' is done'), 'append');
    await within(alice.finish('features', stream.seq), 'finish');

    await eventually(() => events.length === 5, 'the five change events');
    assert.deepEqual(events.map((e) => e.type), ['edited', 'reaction', 'deleted', 'append', 'finished']);
    assert.equal(events[0].text, 'hello world');
    assert.deepEqual([events[1].emoji, events[1].count, events[1].added], ['👍', 1, true]);
    assert.ok(events.every((e, i) => i === 0 || e.rev > events[i - 1].rev), 'revs grow');

    const read = await within(bob.read('features', first.seq), 'read');
    assert.equal(read.seq, first.seq);
    const found = await eventually(async () => {
      const page = await bob.search('features', 'hello wor');
      return page.messages.length === 1 && page;
    }, 'the edited message to be found');
    assert.equal(found.messages[0].text, 'hello world');
    const page = await within(bob.history('features', { after: 0 }), 'history');
    assert.deepEqual(page.messages.map((m) => [m.text, Boolean(m.deleted)]), [
      ['hello world', false],
      ['', true],
      ['deploying is done', false],
    ]);
  });

  test('changes made while a client was away come back as changed events', async (t) => {
    const net = await proxy(server.addr);
    t.after(() => net.close());
    const writer = track(await connected(server.url, 'writer3'));
    const away = track(await connected(net.url, 'away'));
    const seen = recorder(away);
    const changed = [];
    away.on('changed', (m) => changed.push(m));
    const states = [];
    away.on('state', (e) => states.push(e.state));
    await within(writer.join('changes'), 'join');
    await within(away.join('changes'), 'join');
    await within(writer.send('changes', 'one'), 'send');
    await within(writer.send('changes', 'two'), 'send');
    await eventually(() => seen('changes').length === 2, 'both messages');

    net.cut();
    await eventually(() => states.includes('offline'), 'the cut');
    await within(writer.edit('changes', 1, 'one, edited'), 'edit');
    await within(writer.delete('changes', 2), 'delete');
    await within(writer.send('changes', 'three'), 'send');
    net.restore();

    await eventually(
      () => seen('changes').length === 3 && changed.length === 2,
      'the message and the changes',
    ).catch((e) => {
      throw new Error(`${e.message}: seen ${JSON.stringify(seen('changes'))}, changed ${JSON.stringify(changed)}`);
    });
    assert.deepEqual(changed.map((m) => [m.type, m.seq, m.text, Boolean(m.deleted)]), [
      ['changed', 1, 'one, edited', false],
      ['changed', 2, '', true],
    ]);
    assert.deepEqual(seen('changes').map((m) => m.text), ['one', 'two', 'three']);
  });

  test('a direct room for two signed-in users', async () => {
    const ann = track(await connected(server.url, undefined, { token: token('test-secret', 'u_ann') }));
    const ben = track(await connected(server.url, undefined, { token: () => token('test-secret', 'u_ben') }));
    const { room } = await within(ann.dm('u_ben'), 'dm');
    assert.match(room, /^dm-[0-9a-f]{32}$/);
    assert.equal((await within(ben.dm('u_ann'), 'dm')).room, room);
    const guest = track(await connected(server.url, 'guest'));
    await assert.rejects(guest.dm('u_ann'), (e) => e.code === 'forbidden');
  });
});
