// The page's chat features (issue 13) in real headless Chromium against the real
// server: edit and delete, reactions, reply threads, unread badges, search, streamed
// messages and direct messages between users signed in with a token.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import path from 'node:path';
import {
  escapeRegExp,
  eventually,
  joinRoom,
  launchBrowser,
  login,
  openPage,
  send,
  startServer,
  tempDir,
  waitForMessage,
  waitOnline,
  within,
} from './helpers.mjs';

const SECRET = 'e2e-chat-features-secret';

/// An HS256 JWT for user `sub`, signed with the server's --jwt-secret.
function token(sub, name = sub) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub, name, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${unsigned}.${createHmac('sha256', SECRET).update(unsigned).digest('base64url')}`;
}

/// Signs the page in with a token through the login form's token field.
async function loginWithToken(page, jwt) {
  await page.getByText('Sign in with a token instead').click();
  await page.getByLabel('Token', { exact: true }).fill(jwt);
  await page.getByRole('button', { name: 'Start chatting' }).click();
  await waitOnline(page);
}

/// Makes the page (before signing in) come back to `rooms`, viewing `current`, as after
/// a reload: joining a room with the form would view it (and read it).
async function remember(page, rooms, current) {
  await page.evaluate(
    ({ rooms, current }) => {
      localStorage.setItem('bavard.rooms', JSON.stringify(rooms));
      localStorage.setItem('bavard.current', JSON.stringify(current));
    },
    { rooms, current },
  );
}

/// The shown message whose text is exactly `text` (in the room's timeline).
function messageWith(page, text) {
  return page.locator('#messages > li').filter({ has: page.locator('.msg-text', { hasText: new RegExp(`^${escapeRegExp(text)}$`) }) });
}

/// Opens a raw JSON WebSocket from inside `page` as the guest `name` and joins `room`;
/// `call(page, frame)` then sends a request and resolves with its reply.
async function rawClient(page, name, room) {
  await page.evaluate(
    ({ name, room }) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${location.host}/ws?name=${encodeURIComponent(name)}`);
        const waiting = new Map();
        let next = 0;
        window.rawCall = (frame) =>
          new Promise((res) => {
            next += 1;
            waiting.set(next, res);
            ws.send(JSON.stringify({ ...frame, id: next }));
          });
        ws.onmessage = async (event) => {
          const frame = JSON.parse(event.data);
          if (frame.type === 'welcome') {
            const reply = await window.rawCall({ op: 'join', room, limit: 0 });
            if (reply.ok) resolve();
            else reject(new Error(JSON.stringify(reply)));
          } else if (frame.type === 'reply' && waiting.has(frame.id)) {
            waiting.get(frame.id)(frame);
            waiting.delete(frame.id);
          }
        };
        ws.onerror = () => reject(new Error('the raw WebSocket failed'));
      }),
    { name, room },
  );
}

async function call(page, frame) {
  const reply = await within(page.evaluate((f) => window.rawCall(f), frame), `${frame.op} to be answered`);
  assert.equal(reply.ok, true, JSON.stringify(reply));
  return reply;
}

describe('the web client: chat features', () => {
  let tmp;
  let server;
  let browser;
  const contexts = [];

  async function newPage(options) {
    const opened = await openPage(browser, server, options);
    contexts.push(opened.context);
    return opened;
  }

  before(async () => {
    tmp = tempDir();
    server = await startServer({ db: path.join(tmp.dir, 't.db'), args: ['--jwt-secret', SECRET] });
    browser = await launchBrowser();
  });

  after(async () => {
    for (const context of contexts) await context.close().catch(() => {});
    if (browser) await within(browser.close(), 'Chromium to close').catch(() => {});
    if (server) await server.stop();
    if (tmp) tmp.cleanup();
  });

  test('I edit and delete my message; another page sees both; others cannot', async () => {
    const { page: alice } = await newPage();
    await login(alice, 'alice');
    await joinRoom(alice, 'edits');
    const { page: bob } = await newPage();
    await login(bob, 'bob');
    await joinRoom(bob, 'edits');

    await send(alice, 'teh typo');
    await waitForMessage(bob, 'teh typo');
    const mine = messageWith(alice, 'teh typo');
    await mine.hover();
    await mine.getByRole('button', { name: 'Edit' }).click();
    const editor = alice.getByRole('textbox', { name: 'Edit your message' });
    await editor.fill('the typo, fixed');
    await editor.press('Enter');
    await waitForMessage(bob, 'the typo, fixed');
    await messageWith(bob, 'the typo, fixed').locator('.msg-edited', { hasText: '(edited)' }).waitFor();
    await messageWith(alice, 'the typo, fixed').locator('.msg-edited').waitFor();

    // Bob's page offers no edit or delete on Alice's message.
    const theirs = messageWith(bob, 'the typo, fixed');
    await theirs.hover();
    await theirs.getByRole('button', { name: 'Reply in a thread' }).waitFor();
    assert.equal(await theirs.getByRole('button', { name: 'Edit' }).count(), 0);
    assert.equal(await theirs.getByRole('button', { name: 'Delete' }).count(), 0);

    const fixed = messageWith(alice, 'the typo, fixed');
    const seq = await fixed.getAttribute('data-seq');
    await fixed.hover();
    await fixed.getByRole('button', { name: 'Delete', exact: true }).click();
    await alice.locator(`#messages > li[data-seq="${seq}"]`).getByRole('button', { name: 'Yes, delete it' }).click();
    const tombstone = bob.locator(`#messages > li[data-seq="${seq}"] .msg-tombstone`, { hasText: 'message deleted' });
    await tombstone.waitFor();
    await alice.locator(`#messages > li[data-seq="${seq}"] .msg-tombstone`).waitFor();
    assert.equal(await bob.locator(`#messages > li[data-seq="${seq}"]`).textContent().then((t) => t.includes('typo')), false);
    assert.deepEqual([...alice.errors, ...bob.errors], []);
  });

  test('a reaction is toggled and seen by another page, mine highlighted', async () => {
    const { page: carl } = await newPage();
    await login(carl, 'carl');
    await joinRoom(carl, 'reacts');
    const { page: dora } = await newPage();
    await login(dora, 'dora');
    await joinRoom(dora, 'reacts');
    await send(carl, 'ship it?');
    await waitForMessage(dora, 'ship it?');

    const onDora = messageWith(dora, 'ship it?');
    await onDora.hover();
    await onDora.getByRole('button', { name: 'React with 👍' }).click();
    const chipOnCarl = messageWith(carl, 'ship it?').locator('button.reaction');
    await chipOnCarl.filter({ hasText: '👍 1' }).waitFor();
    assert.equal(await chipOnCarl.getAttribute('aria-pressed'), 'false');
    await onDora.locator('button.reaction[aria-pressed="true"]', { hasText: '👍 1' }).waitFor();

    // Carl adds his by clicking the chip: 2, pressed on his page only.
    await chipOnCarl.click();
    await onDora.locator('button.reaction', { hasText: '👍 2' }).waitFor();
    await messageWith(carl, 'ship it?').locator('button.reaction[aria-pressed="true"]', { hasText: '👍 2' }).waitFor();
    assert.equal(await onDora.locator('button.reaction').getAttribute('aria-pressed'), 'true');

    // Dora takes hers back; then Carl his: the chip goes.
    await onDora.locator('button.reaction').click();
    await messageWith(carl, 'ship it?').locator('button.reaction', { hasText: '👍 1' }).waitFor();
    await onDora.locator('button.reaction[aria-pressed="false"]', { hasText: '👍 1' }).waitFor();
    await messageWith(carl, 'ship it?').locator('button.reaction').click();
    await onDora.locator('button.reaction').waitFor({ state: 'detached' });
  });

  test('a reply thread: reply, "N replies", the thread panel on both pages', async () => {
    const { page: eve } = await newPage();
    await login(eve, 'eve');
    await joinRoom(eve, 'threads');
    const { page: finn } = await newPage();
    await login(finn, 'finn');
    await joinRoom(finn, 'threads');
    await send(eve, 'lunch at noon?');
    await waitForMessage(finn, 'lunch at noon?');

    const root = messageWith(finn, 'lunch at noon?');
    await root.hover();
    await root.getByRole('button', { name: 'Reply in a thread' }).click();
    await finn.locator('#thread-panel').waitFor();
    await finn.locator('#thread-messages .msg-text', { hasText: 'lunch at noon?' }).waitFor();
    await finn.locator('#thread-status', { hasText: 'No replies yet.' }).waitFor();
    const reply = finn.getByRole('textbox', { name: 'Reply in the thread' });
    await reply.fill('yes, the usual place');
    await reply.press('Enter');
    await finn.locator('#thread-messages .msg-text', { hasText: 'yes, the usual place' }).waitFor();

    // Eve sees "1 reply" on her message, opens the thread and answers there.
    const count = messageWith(eve, 'lunch at noon?').locator('button.msg-thread');
    await count.filter({ hasText: /^1 reply$/ }).waitFor();
    await count.click();
    await eve.locator('#thread-messages .msg-text', { hasText: 'yes, the usual place' }).waitFor();
    await eve.getByRole('textbox', { name: 'Reply in the thread' }).fill('see you there');
    await eve.getByRole('textbox', { name: 'Reply in the thread' }).press('Enter');
    await finn.locator('#thread-messages .msg-text', { hasText: 'see you there' }).waitFor();
    await messageWith(finn, 'lunch at noon?').locator('button.msg-thread', { hasText: /^2 replies$/ }).waitFor();
    // The replies are in the timeline too, marked as answers.
    await finn.locator('#messages .msg-quote', { hasText: 'lunch at noon?' }).first().waitFor();

    // A reload reads the thread from history: both replies, oldest first.
    await eve.reload();
    await waitOnline(eve);
    await messageWith(eve, 'lunch at noon?').locator('button.msg-thread', { hasText: /^2 replies$/ }).click();
    await eve.locator('#thread-status', { hasText: '2 replies' }).waitFor();
    const texts = await eve.locator('#thread-messages .msg-text').allTextContents();
    assert.deepEqual(texts, ['lunch at noon?', 'yes, the usual place', 'see you there']);
  });

  test('unread badges: counted by the server for a signed-in user, cleared (and read) on viewing', async () => {
    const { page: gina } = await newPage();
    await loginWithToken(gina, token('gina', 'Gina'));
    assert.equal(await gina.locator('#me-name').textContent(), 'Gina');
    await joinRoom(gina, 'news');
    await joinRoom(gina, 'quiet');
    const { page: bot } = await newPage();
    await rawClient(bot, 'newsbot', 'news');
    await call(bot, { op: 'send', room: 'news', text: 'headline one' });
    await call(bot, { op: 'send', room: 'news', text: 'headline two' });
    const news = gina.locator('#room-list button[data-room="news"]');
    await news.locator('.badge', { hasText: '2' }).waitFor();

    // A second device of Gina's, opened later, learns the count from its join reply.
    const { page: tablet } = await newPage();
    await remember(tablet, ['quiet', 'news'], 'quiet');
    await loginWithToken(tablet, token('gina', 'Gina'));
    await tablet.locator('#room-list button[data-room="news"] .badge', { hasText: '2' }).waitFor();
    await call(bot, { op: 'send', room: 'news', text: 'headline three' });
    await tablet.locator('#room-list button[data-room="news"] .badge', { hasText: '3' }).waitFor();
    await news.locator('.badge', { hasText: '3' }).waitFor();

    // Viewing the room on the first device clears its badge there, sends `read`, and
    // the other device's badge clears from the `read` event.
    await news.click();
    await news.locator('.badge').waitFor({ state: 'detached' });
    await tablet.locator('#room-list button[data-room="news"] .badge').waitFor({ state: 'detached' });

    // The server has the read position: a fresh device reports nothing unread.
    const response = await within(fetch(`${server.url}/api/rooms`, { headers: { authorization: `Bearer ${token('gina')}` } }), 'GET /api/rooms');
    const body = await response.json();
    assert.equal(body.rooms.find((r) => r.room === 'news').unread, 0);
    const { page: phone } = await newPage();
    await remember(phone, ['quiet', 'news'], 'quiet');
    await loginWithToken(phone, token('gina', 'Gina'));
    await phone.locator('#room-list button[data-room="news"]').waitFor();
    await phone.locator('#history-status', { hasNotText: 'Loading messages' }).waitFor();
    await call(bot, { op: 'send', room: 'news', text: 'headline four' });
    await phone.locator('#room-list button[data-room="news"] .badge', { hasText: /^1/ }).waitFor();
  });

  test('search finds a message; a click scrolls to it and highlights it', async () => {
    const { page: hugo } = await newPage();
    await login(hugo, 'hugo');
    await joinRoom(hugo, 'searchable');
    await send(hugo, 'the quick brown fox');
    await send(hugo, 'jumps over the lazy dog');
    await waitForMessage(hugo, 'jumps over the lazy dog');
    const box = hugo.getByRole('searchbox', { name: 'Search #searchable' });
    // The server indexes new messages within about half a second: search until found.
    await eventually(async () => {
      await box.fill('brown fo');
      await box.press('Enter');
      await hugo.locator('#search-results .search-head').waitFor();
      return (await hugo.locator('#search-results .search-hit').count()) === 1;
    }, 'the search to find the message');
    const hit = hugo.locator('#search-results .search-hit');
    assert.match(await hit.textContent(), /the quick brown fox/);
    await hit.click();
    await messageWith(hugo, 'the quick brown fox').and(hugo.locator('.highlight')).waitFor();
    await box.fill('zebra');
    await box.press('Enter');
    await hugo.locator('#search-results', { hasText: 'No messages match' }).waitFor();
  });

  test('a streamed message grows live and is complete when finished', async () => {
    const { page: ivy } = await newPage();
    await login(ivy, 'ivy');
    await joinRoom(ivy, 'llm');
    const { page: bot } = await newPage();
    await rawClient(bot, 'llmbot', 'llm');
    const { seq } = await call(bot, { op: 'send', room: 'llm', text: 'Thinking', stream: true });
    const item = ivy.locator(`#messages > li[data-seq="${seq}"]`);
    await item.locator('.msg-text', { hasText: /^Thinking$/ }).waitFor();
    await item.locator('.msg-streaming').waitFor();
    await call(bot, { op: 'append', room: 'llm', seq, text: ' about it' });
    await item.locator('.msg-text', { hasText: /^Thinking about it$/ }).waitFor();
    await call(bot, { op: 'append', room: 'llm', seq, text: ': done.' });
    await item.locator('.msg-text', { hasText: /^Thinking about it: done\.$/ }).waitFor();
    assert.equal(await item.locator('.msg-streaming').count(), 1);
    await call(bot, { op: 'finish', room: 'llm', seq });
    await item.locator('.msg-streaming').waitFor({ state: 'detached' });
    assert.equal(await item.locator('.msg-text').textContent(), 'Thinking about it: done.');

    // A page opened later sees the whole text, not streaming.
    const { page: late } = await newPage();
    await login(late, 'late');
    await joinRoom(late, 'llm');
    await waitForMessage(late, 'Thinking about it: done.');
    assert.equal(await late.locator('#messages .msg-streaming').count(), 0);
  });

  test('changes missed while offline come back on reconnect; a stale change is skipped (rev)', async () => {
    const { page: lily } = await newPage();
    let cut = false;
    const live = [];
    await lily.routeWebSocket(/\/ws\?/, (ws) => {
      if (cut) {
        ws.close({ code: 4000, reason: 'network down (test)' });
        return;
      }
      live.push({ ws, server: ws.connectToServer() });
    });
    await login(lily, 'lily');
    await joinRoom(lily, 'revs');
    const { page: bot } = await newPage();
    await rawClient(bot, 'editor', 'revs');
    const { seq } = await call(bot, { op: 'send', room: 'revs', text: 'version one' });
    const item = lily.locator(`#messages > li[data-seq="${seq}"]`);
    await item.locator('.msg-text', { hasText: /^version one$/ }).waitFor();

    cut = true;
    for (const { ws, server: upstream } of live.splice(0)) {
      await upstream.close().catch(() => {});
      await ws.close({ code: 4000, reason: 'network down (test)' }).catch(() => {});
    }
    await lily.locator('#conn-status[data-state="offline"]').waitFor();
    const edited = await call(bot, { op: 'edit', room: 'revs', seq, text: 'version two' });
    await call(bot, { op: 'react', room: 'revs', seq, emoji: '🎉' });
    cut = false;
    await lily.getByRole('button', { name: 'Reconnect now' }).click();
    await waitOnline(lily);
    // The rejoin's `changed` brings the message in its current state.
    await item.locator('.msg-text', { hasText: /^version two$/ }).waitFor();
    await item.locator('.msg-edited').waitFor();
    await item.locator('button.reaction', { hasText: '🎉 1' }).waitFor();

    // An event older than the copy (a late duplicate) changes nothing.
    await within(
      live[live.length - 1].ws.send(
        JSON.stringify({ type: 'edited', room: 'revs', seq, text: 'stale text', edited_at: new Date().toISOString(), rev: edited.rev }),
      ),
      'the stale event to be sent',
    );
    await call(bot, { op: 'send', room: 'revs', text: 'after the stale event' });
    await waitForMessage(lily, 'after the stale event');
    assert.equal(await item.locator('.msg-text').textContent(), 'version two');
  });

  test('a token in the address signs the page in; a bad token is refused with the reason', async () => {
    const { page } = await newPage();
    await page.goto(`${server.url}/?from=app#token=${token('mona', 'Mona')}`);
    await waitOnline(page);
    assert.equal(await page.locator('#me-name').textContent(), 'Mona');
    assert.equal(new URL(page.url()).hash, '', 'the token is taken out of the address');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Nickname').waitFor();

    const forged = `${token('mona').slice(0, -4)}AAAA`;
    await page.goto(`${server.url}/?from=elsewhere#token=${forged}`);
    await page.locator('#conn-status', { hasText: /The server refused the token \(.*signature.*\)/ }).waitFor();
    assert.equal(await page.locator('#conn-status').getAttribute('data-state'), 'offline');
  });

  test('a direct message between two signed-in pages; guests are told why they cannot', async () => {
    const { page: jade } = await newPage();
    await loginWithToken(jade, token('jade', 'Jade'));
    const { page: kurt } = await newPage();
    await loginWithToken(kurt, token('kurt', 'Kurt'));

    await jade.getByLabel('Message a user').fill('kurt');
    await jade.getByRole('button', { name: 'Open', exact: true }).click();
    await jade.locator('#room-title', { hasText: '@kurt' }).waitFor();
    await jade.locator('#room-list button', { hasText: '@kurt' }).waitFor();
    await jade.locator('#history-status', { hasNotText: 'Loading messages' }).waitFor();
    const dmRoom = await jade.locator('#room-list button', { hasText: '@kurt' }).getAttribute('data-room');
    assert.match(dmRoom, /^dm-[0-9a-f]{32}$/);
    await jade.locator('#composer-text').fill('psst, kurt');
    await jade.locator('#composer-text').press('Enter');
    await waitForMessage(jade, 'psst, kurt');

    await kurt.getByLabel('Message a user').fill('jade');
    await kurt.getByRole('button', { name: 'Open', exact: true }).click();
    await kurt.locator('#room-title', { hasText: '@jade' }).waitFor();
    assert.equal(await kurt.locator('#room-list button', { hasText: '@jade' }).getAttribute('data-room'), dmRoom);
    await waitForMessage(kurt, 'psst, kurt');
    await kurt.locator('#composer-text').fill('hi jade');
    await kurt.locator('#composer-text').press('Enter');
    await waitForMessage(jade, 'hi jade');

    // A DM opened with someone who has not opened it: listed on their page with its
    // unread count, named after the writer, once they sign in.
    await jade.getByLabel('Message a user').fill('liam');
    await jade.getByRole('button', { name: 'Open', exact: true }).click();
    await jade.locator('#room-title', { hasText: '@liam' }).waitFor();
    await jade.locator('#history-status', { hasNotText: 'Loading messages' }).waitFor();
    await jade.locator('#composer-text').fill('are you there, liam?');
    await jade.locator('#composer-text').press('Enter');
    await waitForMessage(jade, 'are you there, liam?');
    const { page: liam } = await newPage();
    await loginWithToken(liam, token('liam', 'Liam'));
    const fromJade = liam.locator('#room-list button', { hasText: '@jade' });
    await fromJade.locator('.badge', { hasText: '1' }).waitFor();
    await fromJade.click();
    await waitForMessage(liam, 'are you there, liam?');
    await fromJade.locator('.badge').waitFor({ state: 'detached' });

    // The DM is not offered to others in the directory.
    const { page: guest } = await newPage();
    await login(guest, 'nosy');
    await guest.locator('#dm-guest', { hasText: 'Direct messages need a signed-in user' }).waitFor();
    assert.equal(await guest.locator('#dm-form').isHidden(), true);
    await eventually(async () => (await guest.locator('#directory-list button').count()) > 0, 'the directory to load');
    assert.equal(await guest.locator('#directory-list button', { hasText: 'dm-' }).count(), 0);
  });
});
