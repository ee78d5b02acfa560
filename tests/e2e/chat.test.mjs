// The web client at / in real headless Chromium, against the real server binary.
import { after, before, describe, test } from 'node:test';
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
  seedMessages,
  send,
  shownMessages,
  startServer,
  tempDir,
  waitForMessage,
  waitOnline,
  within,
} from './helpers.mjs';

describe('the web client', () => {
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
    // Seeding history sends faster than a user may (10 messages a second by default).
    server = await startServer({ db: path.join(tmp.dir, 't.db'), args: ['--user-rate-per-second', '0'] });
    browser = await launchBrowser();
  });

  after(async () => {
    for (const context of contexts) await context.close().catch(() => {});
    if (browser) await within(browser.close(), 'Chromium to close').catch(() => {});
    if (server) await server.stop();
    if (tmp) tmp.cleanup();
  });

  test('the page and its assets are served with their content types', async () => {
    const expect = {
      '/': 'text/html',
      '/assets/app.js': 'text/javascript',
      '/assets/bavard.js': 'text/javascript', // the JavaScript SDK (clients/js/dist), which app.js imports
      '/assets/style.css': 'text/css',
    };
    for (const [file, type] of Object.entries(expect)) {
      const response = await within(fetch(server.url + file), `GET ${file}`);
      assert.equal(response.status, 200, file);
      assert.match(response.headers.get('content-type'), new RegExp(`^${type}`), file);
      assert.ok((await response.text()).length > 100, file);
    }
  });

  test('two people chat in a room: each sees the other, their messages and typing', async () => {
    const { page: alice } = await newPage();
    await login(alice, 'alice');
    await joinRoom(alice, 'lobby');
    const { context: bobContext, page: bob } = await newPage();
    await login(bob, 'bob');
    await joinRoom(bob, 'lobby');

    // Presence: each sees the other online.
    await alice.locator('#member-list li', { hasText: /^bob$/ }).waitFor();
    await bob.locator('#member-list li', { hasText: /^alice$/ }).waitFor();
    await bob.locator('#member-list li', { hasText: /^bob \(you\)$/ }).waitFor();

    await send(alice, 'hello bob');
    await waitForMessage(bob, 'hello bob');
    await send(bob, 'hi alice\nhow are you?');
    await waitForMessage(alice, 'hi alice\nhow are you?');

    // Shift+Enter makes a new line, Enter sends.
    const box = alice.getByRole('textbox', { name: 'Message #lobby' });
    await box.fill('');
    await box.type('line one');
    await box.press('Shift+Enter');
    await box.type('line two');
    assert.equal(await box.inputValue(), 'line one\nline two');
    await box.press('Enter');
    assert.equal(await box.inputValue(), '');
    await waitForMessage(bob, 'line one\nline two');

    // Typing: bob types, alice is told.
    await bob.getByRole('textbox', { name: 'Message #lobby' }).type('still typ');
    await alice.locator('#typing', { hasText: 'bob is typing' }).waitFor();

    const onBob = await shownMessages(bob);
    const onAlice = await shownMessages(alice);
    assert.deepEqual(onBob, onAlice);
    assert.deepEqual(
      onBob.map((m) => [m.from, m.text]),
      [
        ['alice', 'hello bob'],
        ['bob', 'hi alice\nhow are you?'],
        ['alice', 'line one\nline two'],
      ],
    );
    assert.ok(contiguous(onBob));

    // Bob leaves: alice sees him go.
    await bobContext.close();
    await alice.locator('#member-list li', { hasText: /^bob$/ }).waitFor({ state: 'detached' });
    assert.deepEqual(alice.errors, []);
  });

  test('the room shows how many people are online, and the count follows arrivals and departures', async () => {
    const { page: lena } = await newPage();
    await login(lena, 'lena');
    await joinRoom(lena, 'headcount');
    await lena.locator('#room-online', { hasText: /^1 online$/ }).waitFor();
    assert.equal(await lena.locator('#people-count').textContent(), '1');

    const { context: mikeContext, page: mike } = await newPage();
    await login(mike, 'mike');
    await joinRoom(mike, 'headcount');
    await mike.locator('#room-online', { hasText: /^2 online$/ }).waitFor();
    await lena.locator('#room-online', { hasText: /^2 online$/ }).waitFor();
    await lena.locator('#people-count', { hasText: /^2$/ }).waitFor();
    await lena.locator('#member-list li', { hasText: /^mike$/ }).waitFor();

    await mikeContext.close();
    await lena.locator('#room-online', { hasText: /^1 online$/ }).waitFor();
    await lena.locator('#people-count', { hasText: /^1$/ }).waitFor();
    assert.deepEqual(lena.errors, []);
  });

  test('above the presence limit the count follows occupancy events and the list says how many more', async () => {
    // A server of its own, where rooms of more than one user get occupancy counts only.
    const small = await startServer({
      db: path.join(tmp.dir, 'occupancy.db'),
      args: ['--presence-events-max-members', '1'],
    });
    const opened = [];
    try {
      const nina = await openPage(browser, small);
      opened.push(nina.context);
      await login(nina.page, 'nina');
      await joinRoom(nina.page, 'crowd');
      await nina.page.locator('#room-online', { hasText: /^1 online$/ }).waitFor();

      const oscar = await openPage(browser, small);
      opened.push(oscar.context);
      await login(oscar.page, 'oscar');
      await joinRoom(oscar.page, 'crowd');
      // The join reply lists both and counts both.
      await oscar.page.locator('#room-online', { hasText: /^2 online$/ }).waitFor();
      await oscar.page.locator('#member-list li', { hasText: /^nina$/ }).waitFor();

      // Nina gets no presence event for oscar, only the count (within a second).
      await nina.page.locator('#room-online', { hasText: /^2 online$/ }).waitFor();
      await nina.page.locator('#member-list li.more', { hasText: /^and 1 more$/ }).waitFor();
      assert.deepEqual(await nina.page.locator('#member-list li').allTextContents(), ['nina (you)', 'and 1 more']);

      // Back at the limit, a presence event with the count.
      await oscar.context.close();
      await nina.page.locator('#room-online', { hasText: /^1 online$/ }).waitFor();
      await nina.page.locator('#member-list li.more').waitFor({ state: 'detached' });
      assert.deepEqual(nina.page.errors, []);
    } finally {
      for (const context of opened) await context.close().catch(() => {});
      await small.stop();
    }
  });

  test('a reload keeps the nickname, the rooms and the history', async () => {
    const { page } = await newPage();
    await login(page, 'carol');
    await joinRoom(page, 'reloaded');
    for (const text of ['one', 'two', 'three']) await send(page, text);
    await waitForMessage(page, 'three');
    await page.locator('#pending > li').first().waitFor({ state: 'detached' });

    await page.reload();
    await waitOnline(page);
    assert.equal(await page.locator('#me-name').textContent(), 'carol');
    await page.locator('#room-title', { hasText: '#reloaded' }).waitFor();
    await waitForMessage(page, 'three');
    const shown = await shownMessages(page);
    assert.deepEqual(shown.map((m) => m.text), ['one', 'two', 'three']);
    assert.deepEqual(shown.map((m) => m.seq), [1, 2, 3]);
    const rooms = await page.locator('#room-list button').allTextContents();
    assert.deepEqual(rooms, ['#general', '#reloaded']);
    assert.deepEqual(page.errors, []);
  });

  test('what people type is shown as text, never run as HTML', async () => {
    const { page: mallory } = await newPage();
    await login(mallory, 'mallory');
    await joinRoom(mallory, 'xss');
    const { page: victim } = await newPage();
    await login(victim, 'victim');
    await joinRoom(victim, 'xss');
    const attacks = [
      '<img src=x onerror="window.__pwned = 1">',
      '<script>window.__pwned = 2</script>',
      '<b>bold?</b> &amp; &lt;',
    ];
    for (const text of attacks) await send(mallory, text);
    for (const page of [mallory, victim]) {
      await waitForMessage(page, attacks[2]);
      assert.equal(await page.locator('#messages img, #messages script, #messages b').count(), 0);
      const shown = await shownMessages(page);
      assert.deepEqual(shown.map((m) => m.text), attacks);
      assert.equal(await page.evaluate(() => window.__pwned), undefined);
    }
    // And from the history, after a reload.
    await victim.reload();
    await waitOnline(victim);
    await waitForMessage(victim, attacks[2]);
    assert.equal(await victim.locator('#messages img, #messages script, #messages b').count(), 0);
    assert.equal(await victim.evaluate(() => window.__pwned), undefined);
  });

  test('older messages load when scrolling up, each once and in order', async () => {
    const { page } = await newPage();
    assert.equal(await seedMessages(page, 'big', 120, 'seed'), 120);
    await login(page, 'dave');
    await joinRoom(page, 'big');
    // A join returns the latest 50.
    await waitForMessage(page, 'seed 119');
    assert.equal((await shownMessages(page))[0].seq, 71);

    await eventually(async () => {
      await page.locator('#scroller').evaluate((s) => {
        s.scrollTop = 0;
      });
      return page.locator('#history-status', { hasText: 'This is the beginning of #big' }).isVisible();
    }, 'scrolling up to the first message');
    const shown = await shownMessages(page);
    assert.equal(shown.length, 120);
    assert.deepEqual(shown.map((m) => m.seq), Array.from({ length: 120 }, (_, i) => i + 1));
    assert.deepEqual(new Set(shown.map((m) => m.text)).size, 120);
  });

  test('rooms not in view count their unread messages', async () => {
    const { page: erin } = await newPage();
    await login(erin, 'erin');
    await joinRoom(erin, 'quiet');
    await joinRoom(erin, 'busy');
    await joinRoom(erin, 'quiet'); // switch back
    const { page: frank } = await newPage();
    await login(frank, 'frank');
    await joinRoom(frank, 'busy');
    await send(frank, 'are you there?');
    await send(frank, 'hello?');
    const busy = erin.locator('#room-list button[data-room="busy"]');
    await busy.locator('.badge', { hasText: '2' }).waitFor();
    assert.match(await erin.title(), /^\(2\) /);
    // The keyboard switches rooms too.
    await busy.focus();
    await erin.keyboard.press('Enter');
    await erin.locator('#room-title', { hasText: '#busy' }).waitFor();
    await busy.locator('.badge').waitFor({ state: 'detached' });
    await waitForMessage(erin, 'hello?');
    assert.equal(await erin.title(), 'Bavard');
  });

  test('leaving a room forgets it, across reloads too', async () => {
    const { page } = await newPage();
    await login(page, 'ivan');
    await joinRoom(page, 'temporary');
    await page.getByRole('button', { name: 'Leave room' }).click();
    await page.locator('#room-list button[data-room="temporary"]').waitFor({ state: 'detached' });
    await page.locator('#room-title', { hasText: '#general' }).waitFor();
    await page.reload();
    await waitOnline(page);
    assert.deepEqual(await page.locator('#room-list button').allTextContents(), ['#general']);
  });

  test('the room directory from GET /api/rooms offers rooms to join in one click', async () => {
    // Someone talks in a room the newcomer has not joined...
    const { page: talker } = await newPage();
    await login(talker, 'ivan');
    await joinRoom(talker, 'bookclub');
    await send(talker, 'Anyone reading?');
    await waitForMessage(talker, 'Anyone reading?');
    // ...and the newcomer finds it in the server's directory.
    const { page: newcomer } = await newPage();
    await login(newcomer, 'judy');
    await newcomer.getByRole('button', { name: 'Join #bookclub' }).waitFor();
    assert.equal(await newcomer.locator('#directory').isHidden(), false);

    // Rooms already joined are not offered again.

    const { page } = await newPage();
    await page.route('**/api/rooms', (route) =>
      route.fulfill({ json: { rooms: [{ room: 'general', last_seq: 3 }, { room: 'announcements', last_seq: 1 }] } }),
    );
    await login(page, 'kim');
    const offered = page.getByRole('button', { name: 'Join #announcements' });
    await offered.click();
    await page.locator('#room-title', { hasText: '#announcements' }).waitFor();
    await offered.waitFor({ state: 'detached' });
    assert.deepEqual(await page.locator('#room-list button').allTextContents(), ['#general', '#announcements']);
  });

  test('a screenshot of the page, wide and at 375 px', async () => {
    const dir = outputDir();
    const { page: wide } = await newPage({ viewport: { width: 1100, height: 700 } });
    await login(wide, 'grace');
    await joinRoom(wide, 'lobby');
    await joinRoom(wide, 'design');
    await send(wide, 'Here is how the page looks.');
    await waitForMessage(wide, 'Here is how the page looks.');
    const { page: narrow } = await newPage({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
    await login(narrow, 'heidi');
    await joinRoom(narrow, 'design');
    await send(narrow, 'And on a phone, 375 px wide. A longer line to show how text wraps in the list.');
    await waitForMessage(wide, 'And on a phone, 375 px wide. A longer line to show how text wraps in the list.');
    await wide.getByRole('textbox', { name: 'Message #design' }).type('typing');
    await narrow.locator('#typing', { hasText: 'grace is typing' }).waitFor();
    await waitForMessage(narrow, 'Here is how the page looks.');
    await wide.screenshot({ path: path.join(dir, 'chat-desktop.png') });
    await narrow.screenshot({ path: path.join(dir, 'chat-mobile.png') });
    // Nothing wider than the phone's screen.
    const width = await narrow.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 375, `the page is ${width} px wide at 375 px`);
    // The composer is reachable and visible.
    assert.ok(await narrow.getByRole('button', { name: 'Send' }).isVisible());
  });
  test('a kicked user sees why and the room leaves the list', async () => {
    const { page: kim } = await newPage();
    await login(kim, 'kim');
    await joinRoom(kim, 'kickroom');
    await kim.locator('#member-list li', { hasText: /^kim \(you\)$/ }).waitFor();
    // The REST API from this machine, on a server without --api-key, acts as the admin.
    const response = await within(
      fetch(`${server.url}/api/rooms/kickroom/kicks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: 'g_kim', reason: 'spam' }),
      }),
      'the kick',
    );
    assert.equal(response.status, 201, await response.text());
    await kim.locator('#composer-hint', { hasText: 'You were kicked from #kickroom: spam' }).waitFor();
    await eventually(async () => (await kim.locator('#room-list li', { hasText: 'kickroom' }).count()) === 0, 'the room to leave the list');
  });
});
