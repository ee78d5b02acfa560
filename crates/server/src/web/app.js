// Bavard web client: plain JavaScript, no framework, no build step.
//
// The connection is the Bavard JavaScript SDK (clients/js, served at
// /assets/bavard.js): it reconnects with jittered backoff, rejoins each room with
// `since` = the last seq it handed out (paging the rest with `history` when the server
// recovers only part of the gap), hands out each message once and in order, and resends
// unacknowledged messages with the same idempotency `key`. This file is the page: it
// shows the connection state, keeps messages by room+seq, and keeps what the user wrote
// until it is stored (across reloads too).
//
// Everything users type is put on the page with textContent, never as HTML.
import { Client } from './bavard.js';

(() => {
  const STORAGE = {
    name: 'bavard.name',
    rooms: 'bavard.rooms',
    current: 'bavard.current',
    pending: 'bavard.pending',
  };
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
    name: null, // the nickname the user picked
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
    $('retry-now').hidden = kind !== 'offline' || !state.name;
    if (kind !== 'offline') {
      $('conn-retry').textContent = '';
      clearInterval(state.countdownTimer);
    }
  }

  /// Opens the SDK's client for `state.name`; it reconnects by itself from then on.
  function connect() {
    const client = new Client({
      url: location.origin,
      name: state.name,
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
      disconnected(closeReason(event.closeCode), event.retryAt);
    }
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
    if (!state.name) {
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
  }

  function welcomed(welcome) {
    state.me = welcome.user;
    if (welcome.limits && welcome.limits.max_text_chars) state.maxTextChars = welcome.limits.max_text_chars;
    state.online = true;
    state.wasOnline = true;
    setConn('online', 'Connected');
    $('me-name').textContent = welcome.user.name;
    loadDirectory();
    renderPending();
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
    if (room.name === state.current) {
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
      if (mine) settlePending(room, (p) => p.key === m.key || p.ackedSeq === m.seq);
      else stopTyping(room, m.from && m.from.id);
      if (fresh && !mine && room.name !== state.current) room.unread += 1;
    }
    if (added.length === 0) return;
    if (room.name === state.current) insertMessages(added);
    renderRoomList();
  }

  function settlePending(room, matches) {
    const before = room.pending.length;
    room.pending = room.pending.filter((p) => !matches(p));
    if (room.pending.length !== before) {
      savePending();
      if (room.name === state.current) renderPending();
    }
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
    if (room) room.unread = 0;
    const title = $('room-title');
    title.textContent = room ? `#${room.name}` : 'No room yet';
    $('leave-room').hidden = !room;
    $('composer-label').textContent = room ? `Message #${room.name}` : 'Message';
    $('composer-text').disabled = !room;
    $('send-button').disabled = !room;
    $('people-room').textContent = room ? `#${room.name}` : 'this room';
    renderRoomList();
    renderMessages();
    renderPending();
    renderMembers();
    renderTyping();
    scrollToBottom();
    fillViewport();
  }

  function currentRoom() {
    return state.current ? state.rooms.get(state.current) : null;
  }

  /// GET /api/rooms, when the server has it; its absence is fine.
  async function loadDirectory() {
    try {
      const response = await fetch('/api/rooms', { headers: { accept: 'application/json' } });
      if (!response.ok) return;
      const body = await response.json();
      const rooms = Array.isArray(body) ? body : body && Array.isArray(body.rooms) ? body.rooms : [];
      state.directory = rooms
        .map((r) => (typeof r === 'string' ? r : r && (r.room || r.name)))
        .filter((r) => typeof r === 'string' && ROOM_NAME.test(r));
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

  function messageItem(m) {
    const li = el('li', 'msg');
    li.dataset.seq = String(m.seq);
    if (state.me && m.from && m.from.id === state.me.id) li.classList.add('mine');
    const head = el('div', 'msg-head');
    head.append(el('span', 'msg-from', (m.from && m.from.name) || 'someone'));
    const time = el('time', 'msg-time', formatTime(m.ts));
    time.dateTime = m.ts;
    time.title = m.ts;
    head.append(time);
    li.append(head, el('p', 'msg-text', m.text));
    return li;
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
        button.append(el('span', 'room-name', `#${name}`));
        button.addEventListener('click', () => switchTo(name));
        li.append(button);
        room.li = li;
      }
      if (list.children[index] !== room.li) list.insertBefore(room.li, list.children[index] || null);
      const button = room.li.firstElementChild;
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
    $('me-name').textContent = state.name;
    if (window.matchMedia('(max-width: 700px)').matches) $('people').open = false;
  }

  function start(name) {
    state.name = name;
    save(STORAGE.name, name);
    let names = load(STORAGE.rooms, null);
    if (!Array.isArray(names)) names = ['general'];
    names = names.filter((n) => typeof n === 'string' && ROOM_NAME.test(n));
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
    forget(STORAGE.name);
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
    });

    window.addEventListener('online', reconnectNow);
    window.addEventListener('offline', () => {
      if (state.client) state.client.drop('The network is down');
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') reconnectNow();
    });
  }

  wire();
  const saved = load(STORAGE.name, null);
  if (typeof saved === 'string' && validName(saved)) start(saved);
  else showLogin();
})();
