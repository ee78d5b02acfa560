// Bavard web client: plain JavaScript, no framework, no build step.
//
// The connection is the Bavard JavaScript SDK (clients/js, served at
// /assets/bavard.js): it reconnects with jittered backoff, rejoins each room with
// `since` = the last seq it handed out (paging the rest with `history` when the server
// recovers only part of the gap), hands out each message once and in order, and resends
// unacknowledged messages with the same idempotency `key`. This file is the page: it
// shows the connection state, keeps messages by room+seq, and keeps what the user wrote
// until it is stored (across reloads too). It also shows what changes messages after
// they are sent (edits, deletes, reactions, streamed text: applied by the rev rule of
// docs/protocol.md section 4.6), reply threads in a side panel, unread counts, search,
// and direct rooms for users signed in with a token.
//
// Everything users type is put on the page with textContent, never as HTML.
import { Client } from './bavard.js';

(() => {
  const STORAGE = {
    name: 'bavard.name',
    rooms: 'bavard.rooms',
    current: 'bavard.current',
    pending: 'bavard.pending',
    token: 'bavard.token',
    peers: 'bavard.peers', // direct room -> the other user's id
  };
  const QUICK_EMOJI = ['👍', '❤️', '😂', '🎉', '👀'];
  const READ_DELAY_MS = 300;
  const SEARCH_LIMIT = 20;
  const HIGHLIGHT_MS = 2500;
  const DIRECTORY_EVERY_MS = 30000;
  const ROOM_NAME = /^[A-Za-z0-9._-]{1,64}$/;
  const MAX_NAME_CHARS = 32;
  const PAGE = 50;
  const TYPING_SEND_EVERY_MS = 2100; // the server lets one through every 2 s
  const TYPING_SHOWN_MS = 4000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const NEAR_TOP_PX = 80;
  const NEAR_BOTTOM_PX = 60;

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- storage

  function load(key, fallback) {
    try {
      const raw = localStorage.getItem(key);
      return raw === null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  }

  function save(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch {
      // Storage disabled or full: the page keeps working, only a reload forgets.
    }
  }

  function forget(key) {
    try {
      localStorage.removeItem(key);
    } catch {
      // As above.
    }
  }

  // ---------------------------------------------------------------- state

  const state = {
    name: null, // the nickname the user picked (guests)
    token: null, // the JWT the page signs in with, if any
    peers: {}, // direct room -> the other user's id
    me: null, // {id, name} from `welcome`
    maxTextChars: 4000,
    rooms: new Map(), // name -> room (see newRoom)
    order: [], // room names in sidebar order
    current: null, // the room in view
    client: null, // the SDK's Client while signed in
    online: false,
    wasOnline: false, // the last connection got as far as `welcome`
    retryAt: 0,
    countdownTimer: null,
    keyPrefix: randomHex(8),
    keyCounter: 0,
    lastTypingSent: new Map(), // room -> time
    typingTimer: null,
    directory: [], // room names from GET /api/rooms, when the server has it
    editing: null, // {room, seq, text}: the message being edited
    confirming: null, // {room, seq}: the message whose delete awaits a confirmation
    thread: null, // {room, root, replies: Map seq -> message, loading, error}
    readTimer: null,
  };

  function newRoom(name) {
    return {
      name,
      messages: new Map(), // seq -> message
      oldest: Infinity, // smallest seq held
      synced: false, // the first join succeeded (its messages are held)
      joined: false, // joined on the current connection
      loadingOlder: false,
      members: new Map(), // user id -> user: the join reply's list (at most 100), kept by presence
      memberCount: 0, // users online: from the join reply, presence and occupancy events
      typing: new Map(), // user id -> {name, timer}
      unread: 0,
      countedUpTo: 0, // messages up to this seq are counted in `unread` by the server
      readSeq: 0, // the read position sent (or learnt from my other devices)
      pending: [], // {key, text, status: 'sending'|'failed', error, ackedSeq}
      error: '',
      li: null, // its entry in the room list
    };
  }

  function randomHex(bytes) {
    const values = new Uint8Array(bytes);
    crypto.getRandomValues(values);
    return Array.from(values, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function newKey() {
    state.keyCounter += 1;
    return `w${state.keyPrefix}-${Date.now().toString(36)}-${state.keyCounter}`;
  }

  function saveRooms() {
    save(STORAGE.rooms, state.order);
    if (state.current) save(STORAGE.current, state.current);
    else forget(STORAGE.current);
  }

  function savePending() {
    const all = [];
    for (const name of state.order) {
      for (const p of state.rooms.get(name).pending) {
        if (p.status !== 'failed') all.push({ room: name, key: p.key, text: p.text });
      }
    }
    save(STORAGE.pending, all);
  }

  // ---------------------------------------------------------------- connection

  /// Shows the connection state (a live region: it changes only on transitions; the
  /// countdown to the next attempt is outside it, so screen readers are not flooded).
  function setConn(kind, text) {
    const status = $('conn-status');
    status.dataset.state = kind;
    if (status.textContent !== text) status.textContent = text;
    $('retry-now').hidden = kind !== 'offline' || !signedIn();
    if (kind !== 'offline') {
      $('conn-retry').textContent = '';
      clearInterval(state.countdownTimer);
    }
  }

  function signedIn() {
    return Boolean(state.name || state.token);
  }

  /// Opens the SDK's client for `state.token` or `state.name`; it reconnects by itself
  /// from then on.
  function connect() {
    const client = new Client({
      url: location.origin,
      ...(state.token ? { token: state.token } : { name: state.name }),
      minBackoffMs: BACKOFF_MIN_MS,
      maxBackoffMs: BACKOFF_MAX_MS,
    });
    state.client = client;
    client.on('state', (event) => {
      if (client === state.client) connectionChanged(event);
    });
    client.on('message', (message) => {
      const room = state.rooms.get(message.room);
      if (room) addMessages(room, [message], true);
    });
    client.on('rejoined', ({ room, reply }) => joined(state.rooms.get(room), reply));
    client.on('edited', (e) => change(e, (m) => {
      m.text = e.text;
      m.edited_at = e.edited_at;
    }));
    client.on('deleted', (e) => change(e, (m) => {
      m.text = '';
      m.deleted = true;
      delete m.streaming;
      delete m.reactions;
    }));
    client.on('reaction', (e) => change(e, (m) => reacted(m, e)));
    client.on('append', (e) => change(e, (m, room) => appended(room, m, e)));
    client.on('finished', (e) => change(e, (m) => {
      delete m.streaming;
    }));
    client.on('changed', replaced);
    client.on('read', readMoved);
    client.on('history_restarted', ({ room }) => resetRoom(state.rooms.get(room)));
    client.on('presence', presence);
    client.on('typing', typing);
    client.on('occupancy', occupancy);
    client.on('removed', removed);
    client.on('closing', () => setConn('connecting', 'The server is restarting…'));
    for (const name of state.order) joinRoom(state.rooms.get(name));
    for (const name of state.order) {
      const room = state.rooms.get(name);
      for (const p of room.pending) if (p.status !== 'failed') sendPending(room, p);
    }
  }

  function connectionChanged(event) {
    if (event.state === 'connecting') {
      setConn('connecting', event.attempt > 0 ? `Reconnecting (attempt ${event.attempt + 1})…` : 'Connecting…');
    } else if (event.state === 'online') {
      welcomed(event.welcome);
    } else if (event.state === 'offline') {
      const refused = event.error && event.error.code === 'refused';
      const neverWelcomed = !state.wasOnline;
      disconnected(refused ? 'The server refused the connection' : closeReason(event.closeCode), event.retryAt);
      if (state.token && neverWelcomed) checkToken(state.client);
    }
  }

  /// Browsers do not tell why a WebSocket upgrade failed: when a connection with a token
  /// fails before its welcome, ask the REST API whether the token is the reason (401),
  /// and if so stop trying and say why.
  async function checkToken(client) {
    let message;
    try {
      const response = await fetch('/api/rooms?limit=1', { headers: { authorization: `Bearer ${state.token}` } });
      if (response.status !== 401) return;
      const body = await response.json().catch(() => ({}));
      message = (body && body.error && body.error.message) || 'the token is not valid';
    } catch {
      return; // the server is not reachable: the SDK keeps trying
    }
    if (client !== state.client || state.online) return;
    client.close();
    state.client = null;
    disconnected(`The server refused the token (${message}). Sign out and sign in with a fresh one`, null);
  }

  function closeReason(code) {
    switch (code) {
      case 1001: return 'The server is restarting';
      case 1008: return 'The server refused the connection';
      case 1009: return 'A message was too large for the server';
      case 4008: return 'The connection fell behind';
      case 4029: return 'Too many messages too fast';
      default: return state.wasOnline ? 'Connection lost' : 'Cannot reach the server';
    }
  }

  /// The connection is down: say so, and when the SDK tries again (`retryAt`; null: it
  /// does not by itself, the user may).
  function disconnected(reason, retryAt) {
    state.online = false;
    state.wasOnline = false;
    for (const room of state.rooms.values()) {
      room.joined = false;
      for (const t of room.typing.values()) clearTimeout(t.timer);
      room.typing.clear();
    }
    renderPending();
    renderTyping();
    renderMembers();
    if (!signedIn()) {
      setConn('offline', 'Not connected');
      return;
    }
    setConn('offline', retryAt === null ? `${reason}.` : `${reason}. Reconnecting…`);
    clearInterval(state.countdownTimer);
    if (retryAt === null) return;
    state.retryAt = retryAt;
    const show = () => {
      const secs = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
      $('conn-retry').textContent = `Next try in ${secs} s`;
    };
    show();
    state.countdownTimer = setInterval(show, 1000);
  }

  function reconnectNow() {
    if (state.client) state.client.reconnectNow();
    else if (signedIn() && !$('chat-view').hidden) connect(); // after a refused token
  }

  function welcomed(welcome) {
    const changedUser = !state.me || state.me.id !== welcome.user.id;
    state.me = welcome.user;
    if (welcome.limits && welcome.limits.max_text_chars) state.maxTextChars = welcome.limits.max_text_chars;
    state.online = true;
    state.wasOnline = true;
    setConn('online', 'Connected');
    $('me-name').textContent = welcome.user.name;
    loadDirectory();
    renderPending();
    renderDmBox();
    if (changedUser) {
      renderMessages(); // which messages are mine is known now
      renderThread();
    }
  }

  // ---------------------------------------------------------------- rooms

  /// Joins `room` for this page (the SDK rejoins it after each reconnect).
  async function joinRoom(room) {
    if (!room || !state.client) return;
    const client = state.client;
    let reply;
    try {
      reply = await client.join(room.name, { limit: PAGE });
    } catch (e) {
      if (client !== state.client || state.rooms.get(room.name) !== room || e.code === 'closed') return;
      room.error = `Cannot join #${room.name}: ${e.message}`;
      if (room.name === state.current) renderHistoryStatus();
      return;
    }
    if (client !== state.client || state.rooms.get(room.name) !== room) return; // left meanwhile
    addMessages(room, reply.messages, false);
    room.synced = true;
    joined(room, reply);
  }

  /// A join reply (the first one, or a rejoin after a reconnect): who is online.
  function joined(room, reply) {
    if (!room) return;
    room.error = '';
    room.joined = true;
    room.members = new Map(reply.members.map((u) => [u.id, u]));
    // Older servers sent every member and no count.
    room.memberCount = typeof reply.member_count === 'number' ? reply.member_count : room.members.size;
    if (typeof reply.unread === 'number') {
      // Signed-in users: the server counts what follows the read position, up to the
      // reply's seq; the messages handed out after the reply count on top.
      room.unread = reply.unread;
      room.countedUpTo = reply.seq;
      renderRoomList();
    }
    if (room.name === state.current) {
      scheduleRead();
      renderMembers();
      renderHistoryStatus();
      fillViewport();
    }
  }

  /// The server's history restarted below what we hold (a new database): start afresh
  /// with its latest messages.
  async function resetRoom(room) {
    if (!room) return;
    room.messages.clear();
    room.oldest = Infinity;
    if (room.name === state.current) renderMessages();
    try {
      const page = await state.client.history(room.name, { limit: PAGE });
      addMessages(room, page.messages, false);
    } catch {
      // Scrolling up loads them later.
    }
  }

  /// Stores messages by seq (ignoring ones already held) and shows the new ones.
  /// `fresh`: they are news (live or recovered), so they count as unread elsewhere.
  function addMessages(room, messages, fresh) {
    const added = [];
    for (const m of messages) {
      if (!m || typeof m.seq !== 'number' || room.messages.has(m.seq)) continue;
      room.messages.set(m.seq, m);
      if (m.seq < room.oldest) room.oldest = m.seq;
      added.push(m);
      const mine = state.me && m.from && m.from.id === state.me.id;
      if (!mine && m.from && room.name.startsWith('dm-') && !state.peers[room.name]) learnPeer(room, m.from.id);
      if (mine) settlePending(room, (p) => p.key === m.key || p.ackedSeq === m.seq);
      else stopTyping(room, m.from && m.from.id);
      if (fresh && !mine && m.seq > room.countedUpTo && !viewing(room)) room.unread += 1;
      if (typeof m.reply_to === 'number' && fresh) threadGrew(room, m);
    }
    if (added.length === 0) return;
    if (room.name === state.current) insertMessages(added);
    renderRoomList();
    if (room.name === state.current) scheduleRead();
  }

  function settlePending(room, matches) {
    const before = room.pending.length;
    room.pending = room.pending.filter((p) => !matches(p));
    if (room.pending.length !== before) {
      savePending();
      if (room.name === state.current) renderPending();
    }
  }

  // ---------------------------------------------------------------- changes to messages

  /// The copy of message `seq` of `room` the page holds (timeline or open thread).
  function heldMessage(room, seq) {
    const m = room.messages.get(seq);
    if (m) return m;
    const t = state.thread;
    return t && t.room === room.name ? (t.replies.get(seq) || (t.rootMessage && t.rootMessage.seq === seq ? t.rootMessage : null)) : null;
  }

  /// A change event (edited, deleted, reaction, append, finished): applied to the copy
  /// only if its `rev` is newer than the copy's (docs/protocol.md, section 4.6).
  function change(event, apply) {
    const room = state.rooms.get(event.room);
    if (!room || typeof event.seq !== 'number' || typeof event.rev !== 'number') return;
    const m = heldMessage(room, event.seq);
    if (!m || event.rev <= (m.rev || 0)) return;
    apply(m, room);
    m.rev = event.rev;
    if (event.type === 'deleted') {
      if (state.editing && state.editing.room === room.name && state.editing.seq === m.seq) state.editing = null;
      if (m.from && state.me && m.from.id !== state.me.id && m.seq > (room.readSeq || 0) && room.unread > 0 && !viewing(room)) {
        room.unread -= 1; // deleted messages are not unread
        renderRoomList();
      }
    }
    redraw(room, m);
  }

  function reacted(m, e) {
    const reactions = Array.isArray(m.reactions) ? m.reactions : [];
    let entry = reactions.find((r) => r.emoji === e.emoji);
    if (!entry) {
      entry = { emoji: e.emoji, count: 0 };
      reactions.push(entry);
    }
    entry.count = e.count;
    if (state.me && e.user && e.user.id === state.me.id) entry.me = e.added;
    m.reactions = reactions.filter((r) => r.count > 0);
    if (m.reactions.length === 0) delete m.reactions;
  }

  /// Streamed text: `offset` is how many characters the copy should have; a copy that
  /// missed a change is read again.
  function appended(room, m, e) {
    const chars = Array.from(m.text || '');
    if (typeof e.offset === 'number' && chars.length < e.offset) {
      refetch(room, m.seq);
      return;
    }
    m.text = (typeof e.offset === 'number' ? chars.slice(0, e.offset).join('') : m.text) + e.text;
  }

  /// Reads message `seq` again (its copy missed a change) and puts it in place.
  async function refetch(room, seq) {
    try {
      const page = await state.client.history(room.name, { after: seq - 1, before: seq + 1, limit: 1 });
      const fresh = page.messages.find((m) => m.seq === seq);
      if (fresh) replaced({ ...fresh, type: 'changed' });
    } catch {
      // The next change or reconnect brings it.
    }
  }

  const CHANGEABLE = ['text', 'edited_at', 'deleted', 'streaming', 'reactions', 'reply_count', 'last_reply_at', 'rev'];

  /// A message in its current state (the SDK's `changed` after a reconnect, or read
  /// again): replaces the copy unless the copy is newer.
  function replaced(event) {
    const room = state.rooms.get(event.room);
    if (!room) return;
    const m = heldMessage(room, event.seq);
    if (!m || (event.rev || 0) < (m.rev || 0)) return;
    for (const field of CHANGEABLE) {
      if (event[field] === undefined) delete m[field];
      else m[field] = event[field];
    }
    redraw(room, m);
  }

  /// A reply arrived: its root shows one more reply, and an open thread shows it.
  function threadGrew(room, reply) {
    const root = heldMessage(room, reply.reply_to);
    if (root) {
      root.reply_count = (root.reply_count || 0) + 1;
      root.last_reply_at = reply.ts;
      redraw(room, root);
    }
    const t = state.thread;
    if (t && t.room === room.name && t.root === reply.reply_to && !t.replies.has(reply.seq)) {
      t.replies.set(reply.seq, reply);
      renderThread();
    }
  }

  /// Someone's read position moved; mine (another device of mine): fewer unread.
  function readMoved(event) {
    const room = state.rooms.get(event.room);
    if (!room || !state.me || !event.user || event.user.id !== state.me.id || typeof event.seq !== 'number') return;
    if (event.seq <= room.readSeq) return;
    room.readSeq = event.seq;
    if (room.oldest <= event.seq + 1) {
      let unread = 0;
      for (const m of room.messages.values()) {
        if (m.seq > event.seq && !m.deleted && !(m.from && m.from.id === state.me.id)) unread += 1;
      }
      room.unread = unread;
      renderRoomList();
    }
  }

  /// Whether the user sees the latest messages of `room` now.
  function viewing(room) {
    return room.name === state.current && document.visibilityState === 'visible' && nearBottom();
  }

  /// Sends `read` for the latest message of the room in view, once the user sees it.
  function scheduleRead() {
    clearTimeout(state.readTimer);
    state.readTimer = setTimeout(sendRead, READ_DELAY_MS);
  }

  function sendRead() {
    const room = currentRoom();
    if (!room || !room.joined || !state.online || !viewing(room)) return;
    room.unread = 0;
    renderRoomList();
    let latest = 0;
    for (const seq of room.messages.keys()) if (seq > latest) latest = seq;
    if (latest <= room.readSeq) return;
    room.readSeq = latest;
    state.client.read(room.name, latest).catch(() => {
      if (room.readSeq === latest) room.readSeq = 0; // tried again on the next view
    });
  }

  /// Redraws message `m` wherever it is shown.
  function redraw(room, m) {
    if (room.name !== state.current) return;
    for (const list of [$('messages'), $('thread-messages')]) {
      const old = list.querySelector(`li[data-seq="${m.seq}"]`);
      if (!old) continue;
      const focused = old.contains(document.activeElement) ? document.activeElement.dataset.action : null;
      const stick = list === $('messages') && nearBottom();
      const item = messageItem(m, list === $('thread-messages'));
      old.replaceWith(item);
      if (focused) {
        const again = item.querySelector(`[data-action="${CSS.escape(focused)}"]`);
        if (again) again.focus();
      }
      if (stick) scrollToBottom();
    }
  }

  // ---------------------------------------------------------------- actions on messages

  async function act(what, room, run) {
    try {
      await run();
    } catch (e) {
      if (e.code !== 'closed') showComposerError(`Cannot ${what}: ${e.message}`);
    }
  }

  function toggleReaction(room, m, emoji) {
    const mine = (m.reactions || []).some((r) => r.emoji === emoji && r.me);
    act(mine ? 'take the reaction back' : 'react', room, () =>
      mine ? state.client.unreact(room.name, m.seq, emoji) : state.client.react(room.name, m.seq, emoji));
  }

  function startEdit(room, m) {
    state.editing = { room: room.name, seq: m.seq, text: m.text };
    state.confirming = null;
    redraw(room, m);
    const box = document.querySelector(`li[data-seq="${m.seq}"] .msg-edit textarea`);
    if (box) {
      box.focus();
      box.setSelectionRange(box.value.length, box.value.length);
    }
  }

  function stopEdit(room, m) {
    state.editing = null;
    redraw(room, m);
  }

  async function saveEdit(room, m, text) {
    const trimmed = text.replace(/\s+$/, '');
    if (!trimmed.trim() || trimmed === m.text) {
      stopEdit(room, m);
      return;
    }
    state.editing = null;
    redraw(room, m);
    await act('edit the message', room, () => state.client.edit(room.name, m.seq, trimmed));
  }

  function askDelete(room, m, asking) {
    state.confirming = asking ? { room: room.name, seq: m.seq } : null;
    redraw(room, m);
    const target = document.querySelector(`li[data-seq="${m.seq}"] [data-action="${asking ? 'confirm-delete' : 'delete'}"]`);
    if (target) target.focus();
  }

  async function deleteMessage(room, m) {
    state.confirming = null;
    redraw(room, m);
    await act('delete the message', room, () => state.client.delete(room.name, m.seq));
  }

  // ---------------------------------------------------------------- threads

  function threadRoot(m) {
    return typeof m.reply_to === 'number' ? m.reply_to : m.seq;
  }

  /// Opens the thread of message `root` in the side panel and reads its replies.
  async function openThread(room, root) {
    const t = { room: room.name, root, rootMessage: null, replies: new Map(), loading: true, error: '' };
    state.thread = t;
    renderThread();
    $('thread-text').focus();
    try {
      t.rootMessage = room.messages.get(root) || null;
      if (!t.rootMessage) {
        const page = await state.client.history(room.name, { after: root - 1, before: root + 1, limit: 1 });
        t.rootMessage = page.messages.find((m) => m.seq === root) || null;
      }
      let after = 0;
      for (let pages = 0; pages < 20; pages += 1) {
        const page = await state.client.history(room.name, { thread: root, after, limit: 200 });
        for (const m of page.messages) {
          if (!t.replies.has(m.seq)) t.replies.set(m.seq, room.messages.get(m.seq) || m);
          after = Math.max(after, m.seq);
        }
        if (!page.has_more || page.messages.length === 0) break;
      }
    } catch (e) {
      t.error = `Cannot read the thread: ${e.message}`;
    } finally {
      t.loading = false;
      if (state.thread === t) renderThread();
    }
  }

  function closeThread() {
    state.thread = null;
    renderThread();
  }

  async function sendThreadReply() {
    const t = state.thread;
    const room = t && state.rooms.get(t.room);
    const box = $('thread-text');
    if (!room) return;
    const text = box.value.replace(/\s+$/, '');
    if (!text.trim()) return;
    $('thread-error').textContent = '';
    box.value = '';
    try {
      await state.client.send(room.name, text, { reply_to: t.root });
    } catch (e) {
      if (e.code === 'closed') return;
      box.value = text;
      $('thread-error').textContent = `Not sent: ${e.message}`;
    }
  }

  // ---------------------------------------------------------------- search

  async function search(q) {
    const room = currentRoom();
    const box = $('search-results');
    if (!room || !q.trim()) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    box.replaceChildren(el('p', 'hint', `Searching #${room.name}…`));
    let reply;
    try {
      reply = await state.client.search(room.name, q, { limit: SEARCH_LIMIT });
    } catch (e) {
      box.replaceChildren(el('p', 'error', `Cannot search: ${e.message}`));
      return;
    }
    if (currentRoom() !== room) return;
    const head = el('div', 'search-head');
    const count = reply.messages.length;
    head.append(el('span', '', count === 0 ? `No messages match “${q}”.` : `${count}${reply.has_more ? '+' : ''} found for “${q}”`));
    const close = el('button', 'small', 'Close');
    close.type = 'button';
    close.addEventListener('click', () => {
      box.hidden = true;
      $('search-q').focus();
    });
    head.append(close);
    const list = el('ol', 'search-list');
    for (const m of reply.messages) {
      const li = el('li');
      const button = el('button', 'search-hit');
      button.type = 'button';
      button.dataset.seq = String(m.seq);
      button.append(el('span', 'msg-from', (m.from && m.from.name) || 'someone'), el('span', 'msg-time', formatTime(m.ts)),
        el('span', 'search-text', m.text));
      button.addEventListener('click', () => showMessage(room, m.seq));
      li.append(button);
      list.append(li);
    }
    box.replaceChildren(head, list);
  }

  /// Scrolls to message `seq` (reading older pages until it is held) and highlights it.
  async function showMessage(room, seq) {
    for (let pages = 0; pages < 40 && !room.messages.has(seq) && room.oldest > seq && room.oldest !== Infinity; pages += 1) {
      await loadOlder(room);
      if (currentRoom() !== room) return;
    }
    const li = $('messages').querySelector(`li[data-seq="${seq}"]`);
    if (!li) return;
    li.scrollIntoView({ block: 'center' });
    li.classList.add('highlight');
    setTimeout(() => li.classList.remove('highlight'), HIGHLIGHT_MS);
  }

  // ---------------------------------------------------------------- direct rooms

  async function openDm(userId) {
    const error = $('dm-error');
    error.textContent = '';
    try {
      const reply = await state.client.dm(userId);
      state.peers[reply.room] = userId;
      save(STORAGE.peers, state.peers);
      $('dm-user').value = '';
      const known = state.rooms.has(reply.room);
      addRoom(reply.room);
      if (known) renderRoomList();
    } catch (e) {
      error.textContent = `Cannot open a conversation with ${userId}: ${e.message}`;
    }
  }

  /// The other user of a direct room, learnt from a message of theirs.
  function learnPeer(room, userId) {
    state.peers[room.name] = userId;
    save(STORAGE.peers, state.peers);
    renderRoomList();
    if (room.name === state.current) renderTitle();
  }

  /// How a room is called on the page: `#general`, or `@bob` for a direct room.
  function roomLabel(name) {
    if (!name.startsWith('dm-')) return `#${name}`;
    return state.peers[name] ? `@${state.peers[name]}` : 'Direct conversation';
  }

  function renderDmBox() {
    const guest = !state.token;
    $('dm-form').hidden = guest;
    $('dm-guest').hidden = !guest;
  }

  async function loadOlder(room) {
    if (!room || room.loadingOlder || !room.joined || !(room.oldest > 1) || room.oldest === Infinity) return;
    room.loadingOlder = true;
    renderHistoryStatus();
    try {
      const page = await state.client.history(room.name, { before: room.oldest, limit: PAGE });
      addMessages(room, page.messages, false);
    } catch (e) {
      if (e.fromServer) room.error = `Cannot load earlier messages: ${e.message}`;
    } finally {
      room.loadingOlder = false;
      if (room.name === state.current) {
        renderHistoryStatus();
        fillViewport();
      }
    }
  }

  /// Adds `name` to the room list and joins it, without switching to it.
  function listRoom(name) {
    const room = newRoom(name);
    state.rooms.set(name, room);
    state.order.push(name);
    saveRooms();
    joinRoom(room);
  }

  function addRoom(name, { focus } = { focus: true }) {
    let room = state.rooms.get(name);
    if (!room) {
      room = newRoom(name);
      state.rooms.set(name, room);
      state.order.push(name);
      saveRooms();
      joinRoom(room);
    }
    switchTo(name);
    if (focus) $('composer-text').focus();
    return room;
  }

  function leaveRoom(name) {
    const room = state.rooms.get(name);
    if (!room) return;
    if (state.client) state.client.leave(name).catch(() => {});
    for (const t of room.typing.values()) clearTimeout(t.timer);
    if (room.li) room.li.remove();
    state.rooms.delete(name);
    state.order = state.order.filter((n) => n !== name);
    savePending();
    const next = state.order[0] || null;
    state.current = null;
    saveRooms();
    switchTo(next);
    renderDirectory();
  }

  function switchTo(name) {
    state.current = name && state.rooms.has(name) ? name : null;
    saveRooms();
    const room = currentRoom();
    renderTitle();
    $('leave-room').hidden = !room;
    $('composer-text').disabled = !room;
    $('send-button').disabled = !room;
    $('search-form').hidden = !room;
    $('search-q').value = '';
    $('search-results').hidden = true;
    if (state.thread && state.thread.room !== state.current) state.thread = null;
    state.editing = null;
    state.confirming = null;
    renderThread();
    renderRoomList();
    renderMessages();
    renderPending();
    renderMembers();
    renderTyping();
    scrollToBottom();
    fillViewport();
    scheduleRead();
  }

  /// The room's name wherever the page shows it.
  function renderTitle() {
    const room = currentRoom();
    const label = room ? roomLabel(room.name) : '';
    $('room-title').textContent = room ? label : 'No room yet';
    $('composer-label').textContent = room ? `Message ${label}` : 'Message';
    $('people-room').textContent = room ? label : 'this room';
    $('search-q').setAttribute('aria-label', room ? `Search ${label}` : 'Search');
  }

  function currentRoom() {
    return state.current ? state.rooms.get(state.current) : null;
  }

  /// GET /api/rooms, when the server has it; its absence is fine. With a token, it also
  /// tells the unread count of rooms not joined yet on this connection.
  async function loadDirectory() {
    try {
      const headers = { accept: 'application/json' };
      if (state.token) headers.authorization = `Bearer ${state.token}`;
      const response = await fetch('/api/rooms', { headers });
      if (!response.ok) return;
      const body = await response.json();
      const rooms = Array.isArray(body) ? body : body && Array.isArray(body.rooms) ? body.rooms : [];
      state.directory = rooms
        .map((r) => (typeof r === 'string' ? r : r && (r.room || r.name)))
        .filter((r) => typeof r === 'string' && ROOM_NAME.test(r) && !r.startsWith('dm-'));
      for (const r of rooms) {
        if (!r || typeof r.unread !== 'number') continue;
        // A direct room someone opened with me, with news in it: listed with the rooms.
        if (state.token && r.unread > 0 && /^dm-[0-9a-f]{32}$/.test(r.room) && !state.rooms.has(r.room)) listRoom(r.room);
        const room = state.rooms.get(r.room);
        if (room && !room.synced) room.unread = r.unread;
      }
      renderRoomList();
      renderDirectory();
    } catch {
      // No directory on this server (yet).
    }
  }

  // ---------------------------------------------------------------- sending

  function sendComposer() {
    const room = currentRoom();
    const box = $('composer-text');
    if (!room) return;
    const text = box.value.replace(/\s+$/, '');
    if (!text.trim()) return;
    const chars = Array.from(text).length;
    if (chars > state.maxTextChars) {
      showComposerError(`This message has ${chars} characters; the limit is ${state.maxTextChars}.`);
      return;
    }
    showComposerError('');
    const pending = { key: newKey(), text, status: 'sending', error: '', ackedSeq: 0 };
    room.pending.push(pending);
    savePending();
    box.value = '';
    renderPending();
    scrollToBottom();
    sendPending(room, pending);
  }

  function showComposerError(text) {
    const hint = $('composer-hint');
    hint.textContent = text || 'Enter sends, Shift+Enter starts a new line.';
    hint.classList.toggle('error', Boolean(text));
  }

  /// Hands a message to the SDK, which sends it (again after each reconnect, with the
  /// same key) until the server stores it; shown as pending until its `message` event.
  async function sendPending(room, p) {
    const client = state.client;
    if (!client) return;
    p.status = 'sending';
    renderPending();
    try {
      const reply = await client.send(room.name, p.text, { key: p.key });
      // Shown until its `message` event arrives, unless it is already here (or is an
      // old one: a resend of a message stored before a reload, say).
      const handedOut = client.lastSeq(room.name);
      if (room.messages.has(reply.seq) || (handedOut !== undefined && reply.seq <= handedOut)) {
        settlePending(room, (q) => q === p);
      } else {
        p.ackedSeq = reply.seq;
      }
    } catch (e) {
      if (e.code === 'closed' || client !== state.client || !room.pending.includes(p)) return; // signed out, or left
      p.status = 'failed';
      p.error = e.message;
      savePending();
      renderPending();
    }
  }

  /// Tells the room the user types: at most once per TYPING_SEND_EVERY_MS, and once more
  /// at the end of that interval if they are still at it (so the others see it again
  /// soon after a message of theirs cleared it).
  function typingNow() {
    const room = currentRoom();
    if (!room || !room.joined || !$('composer-text').value.trim()) return;
    const wait = TYPING_SEND_EVERY_MS - (Date.now() - (state.lastTypingSent.get(room.name) || 0));
    if (wait > 0) {
      if (!state.typingTimer) {
        state.typingTimer = setTimeout(() => {
          state.typingTimer = null;
          typingNow();
        }, wait);
      }
      return;
    }
    state.lastTypingSent.set(room.name, Date.now());
    if (state.client && state.online) state.client.typing(room.name).catch(() => {});
  }

  // ---------------------------------------------------------------- presence, typing

  function presence(event) {
    const room = state.rooms.get(event.room);
    if (!room) return;
    for (const u of event.joined || []) room.members.set(u.id, u);
    for (const u of event.left || []) {
      room.members.delete(u.id);
      stopTyping(room, u.id);
    }
    room.memberCount = typeof event.member_count === 'number' ? event.member_count : room.members.size;
    if (room.name === state.current) renderMembers();
  }

  /// A moderator took this connection out of a room (kick, ban, no longer a member):
  /// the room leaves the list, and the composer says why.
  function removed(event) {
    const room = state.rooms.get(event.room);
    if (!room) return;
    room.joined = false;
    const what = { kick: 'You were kicked from', ban: 'You were banned from' }[event.action] || 'You are no longer in';
    const why = event.reason ? `: ${event.reason}` : '';
    leaveRoom(event.room);
    showComposerError(`${what} #${event.room}${why}`);
  }

  /// A large room's count (it sends no per-user presence): the list stays as the join
  /// reply gave it, the count moves.
  function occupancy(event) {
    const room = state.rooms.get(event.room);
    if (!room || typeof event.member_count !== 'number') return;
    room.memberCount = event.member_count;
    if (room.name === state.current) renderMembers();
  }

  function typing(event) {
    const room = state.rooms.get(event.room);
    if (!room || !event.user || (state.me && event.user.id === state.me.id)) return;
    const old = room.typing.get(event.user.id);
    if (old) clearTimeout(old.timer);
    const timer = setTimeout(() => stopTyping(room, event.user.id), TYPING_SHOWN_MS);
    room.typing.set(event.user.id, { name: event.user.name, timer });
    if (room.name === state.current) renderTyping();
  }

  function stopTyping(room, userId) {
    const entry = room.typing.get(userId);
    if (!entry) return;
    clearTimeout(entry.timer);
    room.typing.delete(userId);
    if (room.name === state.current) renderTyping();
  }

  // ---------------------------------------------------------------- rendering

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function formatTime(ts) {
    const date = new Date(ts);
    if (Number.isNaN(date.getTime())) return '';
    const sameDay = date.toDateString() === new Date().toDateString();
    const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return sameDay ? time : `${date.toLocaleDateString()} ${time}`;
  }

  function button(className, text, action, onClick, label) {
    const b = el('button', className, text);
    b.type = 'button';
    b.dataset.action = action;
    if (label) b.setAttribute('aria-label', label);
    b.addEventListener('click', onClick);
    return b;
  }

  /// One message: its head, its text (or editor, or tombstone), its reactions, its
  /// thread, and the actions on it (shown on hover and focus). `inThread`: in the
  /// thread panel, where "reply" answers the thread.
  function messageItem(m, inThread = false) {
    const room = currentRoom();
    const li = el('li', 'msg');
    li.dataset.seq = String(m.seq);
    const mine = Boolean(state.me && m.from && m.from.id === state.me.id);
    if (mine) li.classList.add('mine');
    if (m.deleted) li.classList.add('deleted');
    if (m.streaming) li.classList.add('streaming');
    const head = el('div', 'msg-head');
    head.append(el('span', 'msg-from', (m.from && m.from.name) || 'someone'));
    const time = el('time', 'msg-time', formatTime(m.ts));
    time.dateTime = m.ts;
    time.title = m.ts;
    head.append(time);
    if (m.edited_at && !m.deleted) {
      const edited = el('span', 'msg-note msg-edited', '(edited)');
      edited.title = `Edited ${m.edited_at}`;
      head.append(edited);
    }
    li.append(head);
    if (typeof m.reply_to === 'number' && !inThread && room) {
      const root = room.messages.get(m.reply_to);
      const what = root ? `${(root.from && root.from.name) || 'someone'}: ${root.deleted ? 'message deleted' : root.text}` : `message ${m.reply_to}`;
      li.append(button('msg-quote', `↪ ${what}`, 'quote', () => openThread(room, m.reply_to), `In reply to ${what}. Open the thread`));
    }
    const editing = state.editing && room && state.editing.room === room.name && state.editing.seq === m.seq;
    if (m.deleted) {
      li.append(el('p', 'msg-text msg-tombstone', 'message deleted'));
    } else if (editing) {
      li.append(editor(room, m));
    } else {
      li.append(el('p', 'msg-text', m.text));
    }
    if (m.streaming && !m.deleted) {
      const note = el('span', 'msg-streaming', 'writing');
      note.setAttribute('role', 'status');
      note.append(el('span', 'dots', '…'));
      li.append(note);
    }
    if (!room || m.deleted) return li;
    const reactions = el('div', 'msg-reactions');
    for (const r of m.reactions || []) {
      const chip = button('reaction', `${r.emoji} ${r.count}`, `chip:${r.emoji}`, () => toggleReaction(room, m, r.emoji),
        `${r.emoji}: ${r.count} ${r.count === 1 ? 'reaction' : 'reactions'}${r.me ? ', including yours' : ''}`);
      chip.setAttribute('aria-pressed', r.me ? 'true' : 'false');
      reactions.append(chip);
    }
    if (m.reply_count > 0 && !inThread) {
      const n = m.reply_count;
      reactions.append(button('msg-thread', `${n} ${n === 1 ? 'reply' : 'replies'}`, 'thread', () => openThread(room, m.seq)));
    }
    if (reactions.childElementCount > 0) li.append(reactions);
    const actions = el('div', 'msg-actions');
    for (const emoji of QUICK_EMOJI) {
      actions.append(button('quick', emoji, `react:${emoji}`, () => toggleReaction(room, m, emoji), `React with ${emoji}`));
    }
    if (!inThread || m.seq === (state.thread && state.thread.root)) {
      actions.append(button('small', 'Reply', 'reply', () => openThread(room, threadRoot(m)), 'Reply in a thread'));
    }
    const confirming = state.confirming && state.confirming.room === room.name && state.confirming.seq === m.seq;
    if (mine && confirming) {
      actions.append(el('span', 'msg-note', 'Delete this message?'),
        button('small danger', 'Delete', 'confirm-delete', () => deleteMessage(room, m), 'Yes, delete it'),
        button('small', 'Keep', 'keep', () => askDelete(room, m, false), 'No, keep it'));
    } else if (mine) {
      if (!m.streaming && !editing) actions.append(button('small', 'Edit', 'edit', () => startEdit(room, m), 'Edit'));
      actions.append(button('small', 'Delete', 'delete', () => askDelete(room, m, true), 'Delete'));
    }
    li.append(actions);
    return li;
  }

  /// The inline editor of one's message: Enter saves, Escape cancels.
  function editor(room, m) {
    const form = el('form', 'msg-edit');
    form.noValidate = true;
    const box = el('textarea');
    box.rows = 2;
    box.value = state.editing.text;
    box.setAttribute('aria-label', 'Edit your message');
    box.addEventListener('input', () => {
      if (state.editing) state.editing.text = box.value;
    });
    box.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') {
        event.preventDefault();
        stopEdit(room, m);
      } else if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        saveEdit(room, m, box.value);
      }
    });
    const save = el('button', 'small', 'Save');
    save.type = 'submit';
    save.dataset.action = 'save';
    const cancel = button('small', 'Cancel', 'cancel', () => stopEdit(room, m));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      saveEdit(room, m, box.value);
    });
    const row = el('div', 'msg-head');
    row.append(save, cancel, el('span', 'hint', 'Enter saves, Escape cancels.'));
    form.append(box, row);
    return form;
  }

  function renderThread() {
    const panel = $('thread-panel');
    const t = state.thread;
    const room = t && state.rooms.get(t.room);
    panel.hidden = !room || t.room !== state.current;
    $('chat-view').classList.toggle('with-thread', !panel.hidden);
    if (panel.hidden) return;
    const list = $('thread-messages');
    list.replaceChildren();
    if (t.rootMessage) list.append(messageItem(t.rootMessage, true));
    const replies = Array.from(t.replies.values()).sort((a, b) => a.seq - b.seq);
    for (const m of replies) list.append(messageItem(m, true));
    let status = '';
    if (t.error) status = t.error;
    else if (t.loading) status = 'Loading the thread…';
    else if (replies.length === 0) status = 'No replies yet.';
    else status = `${replies.length} ${replies.length === 1 ? 'reply' : 'replies'}`;
    $('thread-status').textContent = status;
    $('thread-label').textContent = `Reply in the thread`;
  }

  function nearBottom() {
    const s = $('scroller');
    return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
  }

  function scrollToBottom() {
    const s = $('scroller');
    s.scrollTop = s.scrollHeight;
  }

  /// Puts new messages of the room in view at their place by seq, keeping the reader's
  /// position (at the bottom if they were there; on the same message if older ones
  /// were added above).
  function insertMessages(added) {
    const list = $('messages');
    const scroller = $('scroller');
    const stick = nearBottom();
    const oldHeight = scroller.scrollHeight;
    const oldTop = scroller.scrollTop;
    added.sort((a, b) => a.seq - b.seq);
    const first = list.firstElementChild;
    const last = list.lastElementChild;
    const prepend = first && added[added.length - 1].seq < Number(first.dataset.seq);
    if (prepend) {
      list.setAttribute('aria-busy', 'true'); // old messages are not news
      const fragment = document.createDocumentFragment();
      for (const m of added) fragment.append(messageItem(m));
      list.prepend(fragment);
      list.removeAttribute('aria-busy');
    } else if (!last || added[0].seq > Number(last.dataset.seq)) {
      const fragment = document.createDocumentFragment();
      for (const m of added) fragment.append(messageItem(m));
      list.append(fragment);
    } else {
      for (const m of added) {
        let after = list.lastElementChild;
        while (after && Number(after.dataset.seq) > m.seq) after = after.previousElementSibling;
        if (after) after.after(messageItem(m));
        else list.prepend(messageItem(m));
      }
    }
    if (stick && !prepend) scrollToBottom();
    else if (prepend) scroller.scrollTop = oldTop + (scroller.scrollHeight - oldHeight);
    renderHistoryStatus();
  }

  function renderMessages() {
    const list = $('messages');
    const room = currentRoom();
    list.setAttribute('aria-busy', 'true');
    list.replaceChildren();
    if (room) {
      const seqs = Array.from(room.messages.keys()).sort((a, b) => a - b);
      const fragment = document.createDocumentFragment();
      for (const seq of seqs) fragment.append(messageItem(room.messages.get(seq)));
      list.append(fragment);
    }
    list.removeAttribute('aria-busy');
    renderHistoryStatus();
  }

  function renderHistoryStatus() {
    const box = $('history-status');
    const room = currentRoom();
    let kind = 'text';
    let text = '';
    if (!room) text = 'Join a room to start chatting.';
    else if (room.error) [kind, text] = ['error', room.error];
    else if (!room.synced) text = 'Loading messages…';
    else if (room.loadingOlder) text = 'Loading earlier messages…';
    else if (room.messages.size === 0) text = `No messages in #${room.name} yet. Say hello!`;
    else if (room.oldest <= 1) text = `This is the beginning of #${room.name}.`;
    else [kind, text] = ['more', 'Load earlier messages'];
    const shown = `${kind}:${room ? room.name : ''}:${text}`;
    if (box.dataset.shown === shown) return; // keeps focus on the button
    box.dataset.shown = shown;
    box.replaceChildren();
    if (kind === 'error') {
      box.append(el('span', 'error', text));
    } else if (kind === 'more') {
      const more = el('button', '', text);
      more.type = 'button';
      more.addEventListener('click', () => loadOlder(currentRoom()));
      box.append(more);
    } else {
      box.textContent = text;
    }
  }

  /// Loads older pages while the list does not fill the view (nothing to scroll yet).
  function fillViewport() {
    const room = currentRoom();
    const s = $('scroller');
    if (room && room.joined && s.scrollHeight <= s.clientHeight + NEAR_TOP_PX) loadOlder(room);
  }

  function renderPending() {
    const list = $('pending');
    const room = currentRoom();
    list.replaceChildren();
    if (!room) return;
    const me = (state.me && state.me.name) || state.name || 'me';
    for (const p of room.pending) {
      const li = el('li', `msg mine ${p.status === 'failed' ? 'failed' : 'pending'}`);
      li.dataset.key = p.key;
      const head = el('div', 'msg-head');
      head.append(el('span', 'msg-from', me));
      let note;
      if (p.status === 'failed') note = `Not sent: ${p.error}`;
      else if (!state.online) note = 'Waiting for the connection…';
      else note = 'Sending…';
      head.append(el('span', 'msg-note', note));
      li.append(head, el('p', 'msg-text', p.text));
      if (p.status === 'failed') {
        const retry = el('button', 'small', 'Try again');
        retry.type = 'button';
        retry.addEventListener('click', () => {
          p.status = 'sending';
          p.error = '';
          savePending();
          renderPending();
          sendPending(room, p);
        });
        const discard = el('button', 'small', 'Discard');
        discard.type = 'button';
        discard.addEventListener('click', () => settlePending(room, (q) => q === p));
        const actions = el('div', 'msg-head');
        actions.append(retry, discard);
        li.append(actions);
      }
      list.append(li);
    }
  }

  function renderRoomList() {
    const list = $('room-list');
    let total = 0;
    state.order.forEach((name, index) => {
      const room = state.rooms.get(name);
      if (!room.li) {
        const li = el('li');
        const button = el('button');
        button.type = 'button';
        button.dataset.room = name;
        button.append(el('span', 'room-name', roomLabel(name)));
        button.addEventListener('click', () => switchTo(name));
        li.append(button);
        room.li = li;
      }
      if (list.children[index] !== room.li) list.insertBefore(room.li, list.children[index] || null);
      const button = room.li.firstElementChild;
      const label = roomLabel(name);
      const shown = button.querySelector('.room-name');
      if (shown.textContent !== label) shown.textContent = label;
      const current = name === state.current;
      button.setAttribute('aria-current', current ? 'true' : 'false');
      let badge = button.querySelector('.badge');
      if (room.unread > 0 && !current) {
        if (!badge) {
          badge = el('span', 'badge');
          button.append(badge);
        }
        badge.replaceChildren(String(room.unread), el('span', 'visually-hidden', ' unread'));
        total += room.unread;
      } else if (badge) {
        badge.remove();
      }
    });
    document.title = total > 0 ? `(${total}) Bavard` : 'Bavard';
  }

  function renderDirectory() {
    const others = state.directory.filter((name) => !state.rooms.has(name));
    $('directory').hidden = others.length === 0;
    const list = $('directory-list');
    list.replaceChildren();
    for (const name of others) {
      const li = el('li');
      const button = el('button', '', `#${name}`);
      button.type = 'button';
      button.setAttribute('aria-label', `Join #${name}`);
      button.addEventListener('click', () => {
        addRoom(name);
        renderDirectory();
      });
      li.append(button);
      list.append(li);
    }
  }

  function renderMembers() {
    const list = $('member-list');
    const room = currentRoom();
    list.replaceChildren();
    // Offline, who is online is not known: show nothing rather than stale names.
    const known = Boolean(room && state.online);
    const members = known ? Array.from(room.members.values()) : [];
    members.sort((a, b) => a.name.localeCompare(b.name));
    for (const u of members) {
      const mine = state.me && u.id === state.me.id;
      list.append(el('li', '', mine ? `${u.name} (you)` : u.name));
    }
    // Join replies list the first 100 users, and large rooms send only the count (so
    // the list may also hold people who left since): the count is the server's.
    const count = known ? room.memberCount : 0;
    if (count > members.length) list.append(el('li', 'more', `and ${count - members.length} more`));
    $('people-count').textContent = room && !state.online ? 'unknown while offline' : String(count);
    $('room-online').textContent = known && room.synced ? `${count} online` : '';
  }

  function renderTyping() {
    const room = currentRoom();
    const names = room ? Array.from(room.typing.values(), (t) => t.name) : [];
    let text = '';
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = `${names.length} people are typing…`;
    $('typing').textContent = text;
  }

  // ---------------------------------------------------------------- login

  function validName(name) {
    const chars = Array.from(name).length;
    // eslint-disable-next-line no-control-regex
    return chars >= 1 && chars <= MAX_NAME_CHARS && !/[\u0000-\u001f\u007f-\u009f]/.test(name);
  }

  function showLogin() {
    $('chat-view').hidden = true;
    $('me-box').hidden = true;
    $('login-view').hidden = false;
    setConn('offline', 'Not connected');
    $('login-name').value = load(STORAGE.name, '') || '';
    $('login-name').focus();
  }

  function showChat() {
    $('login-view').hidden = true;
    $('chat-view').hidden = false;
    $('me-box').hidden = false;
    $('me-name').textContent = state.name || '…';
    $('logout').textContent = state.token ? 'Sign out' : 'Change nickname';
    renderDmBox();
    if (window.matchMedia('(max-width: 700px)').matches) $('people').open = false;
  }

  /// Starts the chat as the guest `name`, or as the user of `token` (name null).
  function start(name, token = null) {
    state.name = token ? null : name;
    state.token = token;
    if (token) save(STORAGE.token, token);
    else save(STORAGE.name, name);
    const peers = load(STORAGE.peers, {});
    state.peers = peers && typeof peers === 'object' ? peers : {};
    let names = load(STORAGE.rooms, null);
    if (!Array.isArray(names)) names = ['general'];
    // Guests have no direct rooms (the server refuses them).
    names = names.filter((n) => typeof n === 'string' && ROOM_NAME.test(n) && (token || !n.startsWith('dm-')));
    state.rooms.clear();
    state.order = [];
    for (const n of names) {
      if (!state.rooms.has(n)) {
        state.rooms.set(n, newRoom(n));
        state.order.push(n);
      }
    }
    const pending = load(STORAGE.pending, []);
    if (Array.isArray(pending)) {
      for (const p of pending) {
        const room = p && state.rooms.get(p.room);
        if (room && typeof p.key === 'string' && typeof p.text === 'string') {
          room.pending.push({ key: p.key, text: p.text, status: 'sending', error: '', ackedSeq: 0 });
        }
      }
    }
    showChat();
    $('room-list').replaceChildren();
    const current = load(STORAGE.current, null);
    switchTo(state.rooms.has(current) ? current : state.order[0] || null);
    connect();
  }

  function logout() {
    state.name = null;
    state.token = null;
    state.thread = null;
    forget(STORAGE.name);
    forget(STORAGE.token);
    forget(STORAGE.pending);
    for (const room of state.rooms.values()) room.pending = [];
    if (state.client) state.client.close();
    state.client = null;
    clearInterval(state.countdownTimer);
    disconnected('Signed out', null);
    state.me = null;
    showLogin();
  }

  // ---------------------------------------------------------------- wiring

  function wire() {
    $('login-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const token = $('login-token').value.trim();
      if (token) {
        $('login-error').textContent = '';
        $('login-token').value = '';
        start(null, token);
        $('composer-text').focus();
        return;
      }
      const name = $('login-name').value.trim();
      if (!validName(name)) {
        $('login-error').textContent = `Use 1 to ${MAX_NAME_CHARS} characters, without control characters.`;
        $('login-name').setAttribute('aria-invalid', 'true');
        $('login-name').focus();
        return;
      }
      $('login-error').textContent = '';
      $('login-name').removeAttribute('aria-invalid');
      start(name);
      $('composer-text').focus();
    });

    $('join-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const input = $('join-room');
      const name = input.value.trim().replace(/^#/, '');
      if (!ROOM_NAME.test(name)) {
        $('join-error').textContent = 'Room names use 1 to 64 letters, digits, dots, dashes or underscores.';
        input.setAttribute('aria-invalid', 'true');
        input.focus();
        return;
      }
      $('join-error').textContent = '';
      input.removeAttribute('aria-invalid');
      input.value = '';
      addRoom(name);
      renderDirectory();
    });

    $('leave-room').addEventListener('click', () => {
      if (state.current) leaveRoom(state.current);
    });
    $('logout').addEventListener('click', logout);
    $('retry-now').addEventListener('click', reconnectNow);

    $('composer').addEventListener('submit', (event) => {
      event.preventDefault();
      sendComposer();
    });
    const box = $('composer-text');
    box.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        sendComposer();
      }
    });
    box.addEventListener('input', typingNow);

    $('scroller').addEventListener('scroll', () => {
      if ($('scroller').scrollTop < NEAR_TOP_PX) loadOlder(currentRoom());
      if (nearBottom()) scheduleRead();
    });

    $('search-form').addEventListener('submit', (event) => {
      event.preventDefault();
      search($('search-q').value);
    });
    $('search-q').addEventListener('keydown', (event) => {
      if (event.key === 'Escape') $('search-results').hidden = true;
    });

    $('thread-close').addEventListener('click', closeThread);
    $('thread-form').addEventListener('submit', (event) => {
      event.preventDefault();
      sendThreadReply();
    });
    $('thread-text').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        sendThreadReply();
      } else if (event.key === 'Escape') {
        closeThread();
      }
    });

    $('dm-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const user = $('dm-user').value.trim();
      if (!user) {
        $('dm-error').textContent = 'Type the user id of the person to write to.';
        return;
      }
      if (user.startsWith('g_')) {
        $('dm-error').textContent = `${user} is a guest: guests have no direct messages.`;
        return;
      }
      openDm(user);
    });

    window.addEventListener('online', reconnectNow);
    window.addEventListener('offline', () => {
      if (state.client) state.client.drop('The network is down');
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') {
        reconnectNow();
        scheduleRead();
        if (state.online && state.token) loadDirectory();
      }
    });
    // Signed-in users learn of direct rooms opened with them from the directory.
    setInterval(() => {
      if (state.online && state.token && document.visibilityState === 'visible') loadDirectory();
    }, DIRECTORY_EVERY_MS);
  }

  /// A token handed over in the address (`/#token=JWT`, for applications that link to
  /// the page): kept, and taken out of the address bar and history.
  function tokenFromAddress() {
    const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (!match) return null;
    history.replaceState(null, '', location.pathname + location.search);
    try {
      return decodeURIComponent(match[1]);
    } catch {
      return null;
    }
  }

  wire();
  const linked = tokenFromAddress();
  const savedToken = linked || load(STORAGE.token, null);
  const saved = load(STORAGE.name, null);
  if (typeof savedToken === 'string' && savedToken) start(null, savedToken);
  else if (typeof saved === 'string' && validName(saved)) start(saved);
  else showLogin();
})();
