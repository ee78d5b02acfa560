// Bavard's JavaScript client: one ES module, no dependency, for browsers and Node 20+.
//
// A `Client` keeps one WebSocket to a Bavard server (the JSON protocol v1 on `/ws`) and
// survives the network: it reconnects with jittered exponential backoff, rejoins each
// room with `since` = the last seq it handed out (paging the rest with `history` when
// the server could not return the whole gap), hands out each room's messages once and
// in seq order, and resends unacknowledged messages with the same idempotency `key`.
// Other server events, known or not, go to the handlers registered for their type.
//
// The protocol is described in the server's docs/protocol.md.
/** A failed request or connection. `code` is the server's error code or a {@link ClientErrorCode}. */
export class BavardError extends Error {
    constructor(code, message, extra = {}) {
        super(message);
        this.name = 'BavardError';
        this.code = code;
        if (extra.closeCode !== undefined)
            this.closeCode = extra.closeCode;
        if (extra.status !== undefined)
            this.status = extra.status;
    }
    /** True for an answer of the server (an `error` body), false for a connection problem. */
    get fromServer() {
        return !['disconnected', 'timeout', 'closed', 'refused'].includes(this.code);
    }
}
const RETRYABLE = new Set(['rate_limited', 'internal', 'unavailable']);
const GAP_PAGE = 200;
const WEBSOCKET_OPEN = 1;
/** The URL of the JSON endpoint at `url`, with the identity in the query string. */
export function endpoint(url, name, token) {
    const parsed = new URL(url.trim());
    const schemes = { 'ws:': 'ws:', 'http:': 'ws:', 'wss:': 'wss:', 'https:': 'wss:' };
    const scheme = schemes[parsed.protocol];
    if (!scheme)
        throw new BavardError('bad_request', `unsupported scheme ${parsed.protocol} in ${url} (use http(s):// or ws(s)://)`);
    // Browsers' URL objects refuse to switch between "special" and other schemes, so build it anew.
    const path = parsed.pathname === '/' || parsed.pathname === '' ? '/ws' : parsed.pathname;
    const query = new URLSearchParams(parsed.search);
    if (name !== undefined)
        query.set('name', name);
    if (token !== undefined)
        query.set('token', token);
    const search = query.toString();
    return `${scheme}//${parsed.host}${path}${search ? `?${search}` : ''}`;
}
function randomHex(bytes) {
    const values = new Uint8Array(bytes);
    const crypto = globalThis.crypto;
    if (crypto && crypto.getRandomValues)
        crypto.getRandomValues(values);
    else
        for (let i = 0; i < bytes; i += 1)
            values[i] = Math.floor(Math.random() * 256);
    return Array.from(values, (b) => b.toString(16).padStart(2, '0')).join('');
}
/** `ms` give or take 25 %, so that clients cut off together do not come back in lockstep. */
function jittered(ms) {
    return Math.round(ms * (0.75 + Math.random() * 0.5));
}
/** Close codes after which coming back cannot help: a binary frame, a policy refusal. */
function isFatalClose(code) {
    return code === 1003 || code === 1008;
}
/**
 * A reconnecting connection to a Bavard server; see the module's comment. It starts
 * connecting when made; {@link connect} also waits for the first connection.
 */
export class Client {
    constructor(options) {
        /** The current connection's `welcome` (who the server says we are, its limits); null while offline. */
        this.welcome = null;
        this.ws = null;
        this.online = false;
        this.closed = false;
        /** Counts connections, so that late answers of an old one are ignored. */
        this.connection = 0;
        this.attempt = 0;
        this.retryTimer = null;
        this.welcomeTimer = null;
        this.pingTimer = null;
        this.nextId = 1;
        this.calls = new Map();
        this.rooms = new Map();
        this.outbox = [];
        this.onlineWaiters = [];
        this.handlers = new Map();
        this.keyPrefix = randomHex(8);
        this.keyCounter = 0;
        const WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
        if (!WebSocketImpl) {
            throw new BavardError('bad_request', 'no WebSocket implementation: pass one as the WebSocket option (on Node before 22, the ws package)');
        }
        this.WebSocketImpl = WebSocketImpl;
        endpoint(options.url); // fails now on a URL that cannot work
        this.options = {
            url: options.url,
            name: options.name,
            token: options.token,
            minBackoffMs: options.minBackoffMs ?? 500,
            maxBackoffMs: options.maxBackoffMs ?? 15000,
            requestTimeoutMs: options.requestTimeoutMs ?? 15000,
            pingEveryMs: options.pingEveryMs ?? 25000,
            onHandlerError: options.onHandlerError ?? ((error) => console.error('bavard: an event handler failed:', error)),
        };
        setTimeout(() => this.open(), 0);
    }
    on(type, handler) {
        let set = this.handlers.get(type);
        if (!set) {
            set = new Set();
            this.handlers.set(type, set);
        }
        set.add(handler);
        return () => this.off(type, handler);
    }
    off(type, handler) {
        this.handlers.get(type)?.delete(handler);
    }
    emit(type, event) {
        const set = this.handlers.get(type);
        if (!set)
            return;
        for (const handler of Array.from(set)) {
            try {
                handler(event);
            }
            catch (error) {
                this.options.onHandlerError(error);
            }
        }
    }
    emitServer(frame) {
        this.emit(frame.type, frame);
        this.emit('*', frame);
    }
    // ------------------------------------------------------------------ state
    /** Whether a connection is up and welcomed. */
    get connected() {
        return this.online;
    }
    /** The last seq of `room` handed out (the room's last seq when it was joined, until a message came); undefined if not joined. */
    lastSeq(room) {
        const state = this.rooms.get(room);
        return state && state.synced ? state.lastSeq : undefined;
    }
    /** The rooms this client is in (it rejoins them after each reconnect). */
    get joinedRooms() {
        return Array.from(this.rooms.keys());
    }
    /** Waits until the client is connected (at once if it is). */
    ready() {
        if (this.closed)
            return Promise.reject(new BavardError('closed', 'the client is closed'));
        if (this.online)
            return Promise.resolve();
        return new Promise((resolve, reject) => this.onlineWaiters.push({ resolve, reject }));
    }
    // ------------------------------------------------------------------ connection
    async open() {
        this.clearRetry();
        if (this.closed || this.ws)
            return;
        this.emit('state', { state: 'connecting', attempt: this.attempt });
        let url;
        let ws;
        try {
            const token = typeof this.options.token === 'function' ? await this.options.token() : this.options.token;
            if (this.closed || this.ws)
                return;
            url = endpoint(this.options.url, this.options.name, token);
            ws = new this.WebSocketImpl(url);
        }
        catch (error) {
            this.scheduleReconnect(`cannot open a connection: ${error.message || error}`);
            return;
        }
        this.ws = ws;
        this.lastError = undefined;
        const connection = ++this.connection;
        ws.onopen = () => {
            if (ws !== this.ws)
                return;
            this.welcomeTimer = setTimeout(() => {
                if (ws === this.ws && !this.online)
                    this.drop('no welcome from the server');
            }, this.options.requestTimeoutMs);
        };
        ws.onmessage = (event) => {
            if (ws !== this.ws)
                return;
            let frame;
            try {
                frame = JSON.parse(typeof event.data === 'string' ? event.data : String(event.data));
            }
            catch {
                return;
            }
            if (frame && typeof frame === 'object' && typeof frame.type === 'string') {
                this.handleFrame(frame, connection);
            }
        };
        ws.onerror = (event) => {
            // Node's ws tells why (e.g. "Unexpected server response: 401"); browsers never do.
            const message = event?.message;
            if (typeof message === 'string' && message)
                this.lastError = message;
        };
        ws.onclose = (event) => {
            if (ws !== this.ws)
                return;
            this.lost(event.code, event.reason);
        };
    }
    clearRetry() {
        if (this.retryTimer !== null)
            clearTimeout(this.retryTimer);
        this.retryTimer = null;
    }
    /** Forgets the connection that ended with `code` and decides what comes next. */
    lost(code, reason) {
        const wasOnline = this.online;
        this.forgetSocket();
        const status = /response: (\d{3})/.exec(this.lastError ?? '');
        const httpStatus = status ? Number(status[1]) : undefined;
        const refused = httpStatus !== undefined && httpStatus >= 400 && httpStatus < 500 && httpStatus !== 429;
        const text = reason || this.lastError || (wasOnline ? 'connection lost' : 'cannot reach the server');
        if (isFatalClose(code) || refused) {
            const error = new BavardError('refused', `the server refused the connection: ${text}`, {
                closeCode: code,
                status: httpStatus,
            });
            this.attempt += 1;
            this.failWaiters(error);
            this.emit('state', { state: 'offline', reason: text, closeCode: code, attempt: this.attempt, retryAt: null, error });
            return;
        }
        this.scheduleReconnect(text, code);
    }
    /** Drops the socket, failing what waited on it; rooms and unacknowledged sends stay for the next one. */
    forgetSocket() {
        const ws = this.ws;
        this.ws = null;
        this.online = false;
        this.welcome = null;
        if (this.welcomeTimer !== null)
            clearTimeout(this.welcomeTimer);
        if (this.pingTimer !== null)
            clearInterval(this.pingTimer);
        this.welcomeTimer = null;
        this.pingTimer = null;
        if (ws) {
            ws.onopen = null;
            ws.onmessage = null;
            ws.onclose = null;
            ws.onerror = null;
            try {
                ws.close(1000);
            }
            catch {
                // already closed
            }
        }
        const calls = Array.from(this.calls.values());
        this.calls.clear();
        for (const call of calls) {
            clearTimeout(call.timer);
            call.reject(new BavardError('disconnected', 'the connection was lost before the answer came'));
        }
        for (const room of this.rooms.values()) {
            room.joined = false;
            room.joining = false;
            room.recovering = false;
            room.buffer = [];
        }
        for (const send of this.outbox)
            send.inFlight = false;
    }
    scheduleReconnect(reason, closeCode) {
        if (this.closed)
            return;
        const base = Math.min(this.options.maxBackoffMs, this.options.minBackoffMs * 2 ** Math.min(this.attempt, 30));
        const delay = jittered(base);
        this.attempt += 1;
        const retryAt = Date.now() + delay;
        this.clearRetry();
        this.retryTimer = setTimeout(() => this.open(), delay);
        this.emit('state', { state: 'offline', reason, closeCode, attempt: this.attempt, retryAt });
    }
    /** Drops the current connection (e.g. the network went down) and reconnects. */
    drop(reason = 'dropped by the application') {
        if (!this.ws)
            return;
        this.forgetSocket();
        this.scheduleReconnect(reason);
    }
    /** Connects now if offline, without waiting for the backoff (and after a refusal too). */
    reconnectNow() {
        if (this.closed || this.ws)
            return;
        this.attempt = 0;
        this.open();
    }
    /** Closes the connection for good; what waits for an answer fails with `closed`. */
    close() {
        if (this.closed)
            return;
        this.closed = true;
        this.clearRetry();
        this.forgetSocket();
        const error = new BavardError('closed', 'the client was closed');
        this.failWaiters(error);
        for (const send of this.outbox.splice(0)) {
            if (send.timer !== null)
                clearTimeout(send.timer);
            send.reject(error);
        }
        for (const room of this.rooms.values())
            for (const waiter of room.waiters.splice(0))
                waiter.reject(error);
        this.rooms.clear();
        this.emit('state', { state: 'closed' });
    }
    failWaiters(error) {
        for (const waiter of this.onlineWaiters.splice(0))
            waiter.reject(error);
    }
    // ------------------------------------------------------------------ frames
    handleFrame(frame, connection) {
        switch (frame.type) {
            case 'welcome':
                this.welcomed(frame, connection);
                return;
            case 'reply':
                this.replied(frame);
                return;
            case 'message':
                this.received(frame);
                return;
            case 'removed': {
                // A moderator took this connection out: the room is not rejoined.
                const room = this.rooms.get(String(frame.room));
                if (room)
                    this.forgetRoom(room, new BavardError('forbidden', `removed from room ${room.name} (${String(frame.action)})`));
                break;
            }
            default:
                if (typeof frame.rev === 'number' && typeof frame.room === 'string') {
                    // A change to a message (edited, deleted, reaction...): remembered for `since_rev`.
                    const room = this.rooms.get(frame.room);
                    if (room)
                        room.rev = Math.max(room.rev ?? 0, frame.rev);
                }
                break;
        }
        this.emitServer(frame);
    }
    welcomed(welcome, connection) {
        if (this.welcomeTimer !== null)
            clearTimeout(this.welcomeTimer);
        this.welcomeTimer = null;
        this.welcome = welcome;
        this.online = true;
        this.attempt = 0;
        this.pingTimer = setInterval(() => {
            this.call('ping', {}).catch(() => { });
        }, this.options.pingEveryMs);
        this.emit('state', { state: 'online', welcome });
        this.emitServer(welcome);
        for (const room of this.rooms.values())
            this.joinRoom(room, connection);
        for (const send of this.outbox)
            if (!this.rooms.has(send.fields.room))
                this.trySend(send);
        for (const waiter of this.onlineWaiters.splice(0))
            waiter.resolve();
    }
    replied(frame) {
        const call = this.calls.get(frame.id);
        if (!call)
            return;
        this.calls.delete(frame.id);
        clearTimeout(call.timer);
        if (frame.ok) {
            const { type: _type, id: _id, ok: _ok, ...fields } = frame;
            call.resolve(fields);
        }
        else {
            const body = (frame.error ?? {});
            call.reject(new BavardError(body.code || 'internal', body.message || 'the server refused the request'));
        }
    }
    /** Sends one request on the current connection; fails at once when offline. */
    call(op, fields) {
        return new Promise((resolve, reject) => {
            const ws = this.ws;
            if (!ws || !this.online || ws.readyState !== WEBSOCKET_OPEN) {
                reject(new BavardError('disconnected', 'not connected'));
                return;
            }
            const id = this.nextId++;
            const timer = setTimeout(() => {
                this.calls.delete(id);
                reject(new BavardError('timeout', `no answer to ${op} within ${this.options.requestTimeoutMs} ms`));
                // A request without an answer means the connection is dead: start over.
                if (ws === this.ws)
                    this.drop('no answer from the server');
            }, this.options.requestTimeoutMs);
            this.calls.set(id, { resolve, reject, timer });
            try {
                ws.send(JSON.stringify({ ...fields, op, id }));
            }
            catch (error) {
                clearTimeout(timer);
                this.calls.delete(id);
                reject(new BavardError('disconnected', `cannot send: ${error.message || error}`));
            }
        });
    }
    // ------------------------------------------------------------------ rooms and messages
    /** Joins (or rejoins) `room` on the connection numbered `connection`, then hands out what it missed. */
    async joinRoom(room, connection) {
        room.joining = true;
        room.recovering = true;
        room.buffer = [];
        const rejoin = room.synced;
        const since = room.synced ? room.lastSeq : undefined;
        const fields = since === undefined ? { room: room.name, limit: room.limit } : { room: room.name, since };
        if (since !== undefined && room.rev !== null)
            fields.since_rev = room.rev;
        let reply;
        try {
            reply = (await this.call('join', fields));
        }
        catch (error) {
            const e = error;
            if (connection !== this.connection || this.rooms.get(room.name) !== room || !e.fromServer)
                return; // the next connection rejoins
            room.joining = false;
            if (RETRYABLE.has(e.code)) {
                room.joining = true;
                setTimeout(() => {
                    if (connection === this.connection && this.online && this.rooms.get(room.name) === room)
                        this.joinRoom(room, connection);
                }, jittered(this.options.minBackoffMs));
                return;
            }
            this.forgetRoom(room, e);
            return;
        }
        if (connection !== this.connection || this.rooms.get(room.name) !== room)
            return;
        const messages = reply.messages ?? [];
        const changed = reply.changed ?? [];
        // The room's change number now (absent: 0); what changes after it comes as events.
        room.rev = Math.max(room.rev ?? 0, typeof reply.rev === 'number' ? reply.rev : 0);
        if (since === undefined) {
            room.lastSeq = reply.seq;
            room.synced = true;
        }
        else {
            reply.messages = [];
            if (reply.seq < room.lastSeq) {
                room.lastSeq = reply.seq;
                this.emit('history_restarted', { room: room.name, seq: reply.seq });
            }
        }
        if (rejoin)
            this.emit('rejoined', { room: room.name, reply });
        for (const waiter of room.waiters.splice(0))
            waiter.resolve(reply);
        for (const message of changed)
            this.emitServer({ ...message, type: 'changed' });
        if (since !== undefined) {
            for (const message of messages)
                this.deliver(room, message, reply.seq);
            if (reply.recovered === false && room.lastSeq < reply.seq) {
                if (!(await this.page(room, reply.seq + 1, connection)))
                    return;
            }
        }
        // Let the caller see the join reply before the live messages that followed it.
        setTimeout(() => {
            if (connection !== this.connection || this.rooms.get(room.name) !== room)
                return;
            room.joined = true;
            room.joining = false;
            for (const waiter of room.waiters.splice(0))
                waiter.resolve(reply);
            this.catchUp(room, connection);
            for (const send of this.outbox)
                if (send.fields.room === room.name)
                    this.trySend(send);
        }, 0);
    }
    /** Hands out `message` if it is the next one of `room` (and not past `upTo`). */
    deliver(room, message, upTo = Infinity) {
        if (message.seq <= room.lastSeq || message.seq > upTo)
            return;
        room.lastSeq = message.seq;
        const event = message;
        if (event.type === undefined)
            event.type = 'message';
        this.emit('message', event);
        this.emit('*', event);
    }
    /**
     * Pages `room`'s messages after its last seq and before `before` with `history`,
     * handing them out; false if the connection was lost meanwhile.
     */
    async page(room, before, connection) {
        while (room.lastSeq < before - 1) {
            const from = room.lastSeq;
            let page;
            try {
                page = (await this.call('history', { room: room.name, after: from, before, limit: GAP_PAGE }));
            }
            catch (error) {
                const e = error;
                if (connection !== this.connection)
                    return false;
                if (e.fromServer && !RETRYABLE.has(e.code))
                    this.forgetRoom(room, e);
                else if (this.ws)
                    this.drop(`cannot read the missed messages: ${e.message}`);
                return false;
            }
            if (connection !== this.connection || this.rooms.get(room.name) !== room)
                return false;
            for (const message of page.messages)
                this.deliver(room, message, before - 1);
            if (room.lastSeq === from || !page.has_more) {
                // The server has nothing more in that range (never expected: seqs have no gaps).
                if (room.lastSeq < before - 1)
                    room.lastSeq = before - 1;
                break;
            }
        }
        return true;
    }
    /** Hands out the live messages that waited during a join or a paging, filling any gap first. */
    async catchUp(room, connection) {
        room.recovering = true;
        for (;;) {
            room.buffer.sort((a, b) => a.seq - b.seq);
            const next = room.buffer.find((m) => m.seq > room.lastSeq);
            if (next && next.seq > room.lastSeq + 1) {
                if (!(await this.page(room, next.seq, connection)))
                    return;
                continue;
            }
            const waiting = room.buffer.splice(0);
            for (const message of waiting)
                this.deliver(room, message);
            if (room.buffer.length === 0)
                break;
        }
        room.recovering = false;
    }
    received(message) {
        const room = this.rooms.get(message.room);
        if (!room)
            return;
        if (room.recovering || !room.joined) {
            room.buffer.push(message);
            return;
        }
        if (message.seq <= room.lastSeq)
            return;
        if (message.seq === room.lastSeq + 1) {
            this.deliver(room, message);
            return;
        }
        // Something is missing between what was handed out and this message: fetch it first.
        room.buffer.push(message);
        this.catchUp(room, this.connection);
    }
    forgetRoom(room, error) {
        if (this.rooms.get(room.name) !== room)
            return;
        this.rooms.delete(room.name);
        for (const waiter of room.waiters.splice(0))
            waiter.reject(error);
        // Sends that waited for the room go out now, and get the server's answer.
        for (const send of this.outbox)
            if (send.fields.room === room.name)
                this.trySend(send);
    }
    // ------------------------------------------------------------------ the API
    /**
     * Joins `room`; it is joined again after each reconnect, and its messages come as
     * `message` events, each once and in seq order. Without `since`, the reply's
     * `messages` hold the latest `limit` (default 50) messages, as history. With `since`
     * (the last seq the application has), every message after it comes as an event
     * (paged with `history` past the server's recovery limit) and the reply's `messages`
     * is empty. Resolves once joined (waiting for the connection if needed).
     */
    join(room, options = {}) {
        if (this.closed)
            return Promise.reject(new BavardError('closed', 'the client is closed'));
        let state = this.rooms.get(room);
        const fresh = !state;
        if (!state) {
            state = {
                name: room,
                lastSeq: options.since ?? 0,
                synced: options.since !== undefined,
                limit: options.limit ?? 50,
                rev: null,
                joined: false,
                joining: false,
                recovering: false,
                buffer: [],
                waiters: [],
            };
            this.rooms.set(room, state);
        }
        const joined = new Promise((resolve, reject) => state.waiters.push({ resolve, reject }));
        // A room already joined and caught up joins again from the last seq handed out.
        if (this.online && !state.joining && (fresh || state.joined)) {
            state.joined = false;
            this.joinRoom(state, this.connection);
        }
        return joined;
    }
    /** Leaves `room`: its events stop, and it is not rejoined. */
    async leave(room) {
        const state = this.rooms.get(room);
        for (const send of this.outbox.filter((s) => s.fields.room === room && !s.inFlight)) {
            this.settle(send);
            send.reject(new BavardError('not_found', `room ${room} was left before the message was sent`));
        }
        if (state)
            this.forgetRoom(state, new BavardError('not_found', `room ${room} was left`));
        if (!this.online || !state)
            return;
        try {
            await this.call('leave', { room });
        }
        catch (error) {
            const e = error;
            if (e.fromServer && e.code !== 'not_found')
                throw e;
        }
    }
    /**
     * Sends `text` to `room` and resolves with its `seq` and `ts` once the server has
     * stored it. While the connection is down it waits, and it is resent with the same
     * `key` after each reconnect (and after a while when the server is busy), so it is
     * stored once. Fails with the server's error for other refusals (`too_large`, `forbidden`...).
     */
    send(room, text, options = {}) {
        if (this.closed)
            return Promise.reject(new BavardError('closed', 'the client is closed'));
        this.keyCounter += 1;
        const key = options.key ?? `j${this.keyPrefix}-${this.keyCounter}`;
        return new Promise((resolve, reject) => {
            const send = {
                fields: { ...options, room, text, key },
                resolve,
                reject,
                inFlight: false,
                refusals: 0,
                timer: null,
            };
            this.outbox.push(send);
            this.trySend(send);
        });
    }
    settle(send) {
        const index = this.outbox.indexOf(send);
        if (index >= 0)
            this.outbox.splice(index, 1);
        if (send.timer !== null)
            clearTimeout(send.timer);
        send.timer = null;
    }
    trySend(send) {
        if (send.inFlight || send.timer !== null || !this.online)
            return;
        const room = this.rooms.get(send.fields.room);
        if (room && !room.joined)
            return; // sent once the room is rejoined
        send.inFlight = true;
        const connection = this.connection;
        this.call('send', send.fields).then((reply) => {
            this.settle(send);
            send.resolve(reply);
        }, (error) => {
            send.inFlight = false;
            if (!this.outbox.includes(send))
                return;
            if (!error.fromServer)
                return; // resent after the reconnect
            if (RETRYABLE.has(error.code)) {
                send.refusals += 1;
                const wait = jittered(Math.min(this.options.maxBackoffMs, this.options.minBackoffMs * 2 ** Math.min(send.refusals, 30)));
                send.timer = setTimeout(() => {
                    send.timer = null;
                    if (connection === this.connection || this.online)
                        this.trySend(send);
                }, wait);
                return;
            }
            this.settle(send);
            send.reject(error);
        });
    }
    /** Messages sent and not yet acknowledged. */
    get unacknowledged() {
        return this.outbox.length;
    }
    async request(op, fields = {}) {
        await this.ready();
        return this.call(op, fields);
    }
    /** Like {@link request}, retried after a reconnect (for reads, which may be repeated). */
    async retried(op, fields) {
        for (;;) {
            try {
                return (await this.request(op, fields));
            }
            catch (error) {
                if (error.fromServer || error.code === 'closed' || error.code === 'refused')
                    throw error;
            }
        }
    }
    /** A page of stored messages, oldest first (`before`: page backward; `after`: forward). */
    history(room, options = {}) {
        return this.retried('history', { ...options, room });
    }
    /** A page of the users online in `room` (pass the reply's `cursor` for the next). */
    members(room, options = {}) {
        return this.retried('members', { ...options, room });
    }
    /** Tells the room's other users that this one is typing (the server sends at most one event per 2 s). */
    async typing(room) {
        await this.request('typing', { room });
    }
    /** Creates a room owned by the user (guests: public rooms only). */
    create(room, options = {}) {
        return this.request('create', { ...options, room });
    }
    addMember(room, user, role) {
        return this.request('add_member', role ? { room, user, role } : { room, user });
    }
    removeMember(room, user) {
        return this.request('remove_member', { room, user });
    }
    setRole(room, user, role) {
        return this.request('set_role', { room, user, role });
    }
    kick(room, user, options = {}) {
        return this.request('kick', { ...options, room, user });
    }
    ban(room, user, options = {}) {
        return this.request('ban', { ...options, room, user });
    }
    unban(room, user, options = {}) {
        return this.request('unban', { ...options, room, user });
    }
    mute(room, user, options = {}) {
        return this.request('mute', { ...options, room, user });
    }
    unmute(room, user, options = {}) {
        return this.request('unmute', { ...options, room, user });
    }
    /** Moves this connection's expiry to a fresh token's (the same user's). */
    refresh(token) {
        return this.request('refresh', { token });
    }
    /** The direct room of this (signed-in) user and `user`; join it like any room. */
    dm(user) {
        return this.request('dm', { user });
    }
    /** Replaces the text of one's message. */
    edit(room, seq, text) {
        return this.request('edit', { room, seq, text });
    }
    /** Deletes a message (one's own; moderators any). */
    delete(room, seq) {
        return this.request('delete', { room, seq });
    }
    react(room, seq, emoji) {
        return this.request('react', { room, seq, emoji });
    }
    unreact(room, seq, emoji) {
        return this.request('unreact', { room, seq, emoji });
    }
    /** Moves the user's read position in `room` forward to `seq`. */
    read(room, seq) {
        return this.request('read', { room, seq });
    }
    /** Messages of `room` matching the words of `q`, best first. */
    search(room, q, options = {}) {
        return this.request('search', { ...options, room, q });
    }
    /** Adds text to one's streamed message (sent with `send(room, text, {stream: true})`). */
    append(room, seq, text) {
        return this.request('append', { room, seq, text });
    }
    /** Ends one's streamed message. */
    finish(room, seq) {
        return this.request('finish', { room, seq });
    }
    /** Checks that the server answers. */
    async ping() {
        await this.request('ping', {});
    }
}
/**
 * Makes a {@link Client} and waits for its first connection; fails (and closes it) if
 * that first attempt fails, so that a wrong URL, name or token is reported at once.
 */
export function connect(options) {
    const client = new Client(options);
    return new Promise((resolve, reject) => {
        const stop = client.on('state', (event) => {
            if (event.state === 'online') {
                stop();
                resolve(client);
            }
            else if (event.state === 'offline' || event.state === 'closed') {
                stop();
                client.close();
                reject(event.state === 'offline' ? (event.error ?? new BavardError('disconnected', event.reason, { closeCode: event.closeCode })) : new BavardError('closed', 'the client was closed'));
            }
        });
    });
}
