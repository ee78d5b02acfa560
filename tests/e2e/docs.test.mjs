// The REST API's interactive page at /docs in real headless Chromium: it renders the
// operations from /openapi.json, loads nothing from outside the server, and its
// "Try it out" reaches the live API.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { launchBrowser, startServer, tempDir, within } from './helpers.mjs';

describe('the API docs page', () => {
  let tmp;
  let server;
  let browser;

  before(async () => {
    tmp = tempDir();
    server = await startServer({ db: path.join(tmp.dir, 't.db') });
    browser = await launchBrowser();
  });

  after(async () => {
    if (browser) await within(browser.close(), 'Chromium to close').catch(() => {});
    if (server) await server.stop();
    if (tmp) tmp.cleanup();
  });

  test('renders every operation with no request outside the server', async () => {
    const context = await browser.newContext();
    context.setDefaultTimeout(15_000);
    const page = await context.newPage();
    const requested = [];
    page.on('request', (request) => requested.push(request.url()));
    const errors = [];
    page.on('pageerror', (error) => errors.push(error));
    await page.goto(`${server.url}/docs/`);
    // Swagger UI renders one block per operation once it has read /openapi.json.
    await page.locator('.opblock').first().waitFor();
    const operations = await page.locator('.opblock-summary-path').allTextContents();
    for (const path of ['/api/rooms', '/api/rooms/{room}', '/api/rooms/{room}/messages', '/api/rooms/{room}/members']) {
      assert.ok(operations.some((shown) => shown.replace(/\u200b/g, '') === path), `${path} in ${operations}`);
    }
    const outside = requested.filter((url) => !url.startsWith(server.url) && !url.startsWith('data:'));
    assert.deepEqual(outside, [], 'requests outside the server');
    assert.ok(requested.some((url) => url.endsWith('/openapi.json')), 'the page read /openapi.json');
    assert.deepEqual(errors, []);
    await context.close();
  });
});
