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

/** The error codes of the protocol (docs/protocol.md, section 4.1); newer servers may add codes. */
export type ServerErrorCode =
  | 'bad_request'
  | 'unknown_op'
  | 'not_found'
  | 'forbidden'
  | 'rate_limited'
  | 'too_large'
  | 'conflict'
  | 'unauthorized'
  | 'internal'
  | 'unavailable';

/**
 * Codes of failures seen by the client rather than answered by the server:
 * `disconnected` (the connection was lost before the answer came), `timeout` (no answer
 * in time: the connection is dropped and made again), `closed` (the client was closed),
 * `refused` (the server refused the connection for good: a bad token or name, a close
 * with 1003 or 1008).
 */
export type ClientErrorCode = 'disconnected' | 'timeout' | 'closed' | 'refused';

/** A failed request or connection. `code` is the server's error code or a {@link ClientErrorCode}. */
export class BavardError extends Error {
  /** The server's code (an unknown one is to be treated like `internal`), or the client's. */
  readonly code: ServerErrorCode | ClientErrorCode | (string & {});
  /** The WebSocket close code, when the connection was closed. */
  readonly closeCode?: number;
  /** The HTTP status of a refused upgrade, when the WebSocket implementation tells it. */
  readonly status?: number;

  constructor(code: string, message: string, extra: { closeCode?: number; status?: number } = {}) {
    super(message);
    this.name = 'BavardError';
    this.code = code;
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode;
    if (extra.status !== undefined) this.status = extra.status;
  }

  /** True for an answer of the server (an `error` body), false for a connection problem. */
  get fromServer(): boolean {
    return !['disconnected', 'timeout', 'closed', 'refused'].includes(this.code);
  }
}

export interface User {
  id: string;
  name: string;
}

export interface Message {
  room: string;
  seq: number;
  /** RFC 3339, UTC, three fraction digits. */
  ts: string;
  from: User;
  text: string;
  key?: string;
  reply_to?: number;
  edited_at?: string;
  deleted?: boolean;
  streaming?: boolean;
  reactions?: Array<{ emoji: string; count: number; me?: boolean }>;
  reply_count?: number;
  last_reply_at?: string;
  /** The room's change number of the message's last change (absent: never changed). */
  rev?: number;
  [field: string]: unknown;
}

export interface Welcome {
  type: 'welcome';
  protocol: number;
  server: string;
  user: User;
  session: string;
  limits: { max_frame_bytes: number; max_text_chars: number };
  [field: string]: unknown;
}

export interface MessageEvent extends Message {
  type: 'message';
}
export interface PresenceEvent {
  type: 'presence';
  room: string;
  joined?: User[];
  left?: User[];
  member_count: number;
  [field: string]: unknown;
}
export interface TypingEvent {
  type: 'typing';
  room: string;
  user: User;
  [field: string]: unknown;
}
export interface OccupancyEvent {
  type: 'occupancy';
  room: string;
  member_count: number;
  [field: string]: unknown;
}
export interface RemovedEvent {
  type: 'removed';
  room: string;
  action: 'kick' | 'ban' | 'remove_member' | 'kind' | (string & {});
  reason?: string;
  until?: string;
  [field: string]: unknown;
}
export interface ClosingEvent {
  type: 'closing';
  reason: string;
  [field: string]: unknown;
}
export interface ErrorEvent {
  type: 'error';
  error: { code: string; message: string };
  [field: string]: unknown;
}
/** A change to a message (`rev`: apply it only if greater than your copy's). */
export interface EditedEvent {
  type: 'edited';
  room: string;
  seq: number;
  text: string;
  edited_at: string;
  rev: number;
  [field: string]: unknown;
}
export interface DeletedEvent {
  type: 'deleted';
  room: string;
  seq: number;
  rev: number;
  [field: string]: unknown;
}
export interface ReactionEvent {
  type: 'reaction';
  room: string;
  seq: number;
  emoji: string;
  user: User;
  added: boolean;
  count: number;
  rev: number;
  [field: string]: unknown;
}
export interface ReadEvent {
  type: 'read';
  room: string;
  user: User;
  seq: number;
  [field: string]: unknown;
}
export interface AppendEvent {
  type: 'append';
  room: string;
  seq: number;
  text: string;
  /** Characters the message had before: a copy shorter than that missed a change. */
  offset: number;
  rev: number;
  [field: string]: unknown;
}
export interface FinishedEvent {
  type: 'finished';
  room: string;
  seq: number;
  rev: number;
  [field: string]: unknown;
}
/**
 * A message changed while this client was away (the `changed` of a rejoin with
 * `since_rev`), in its current state: replace your copy of it.
 */
export interface ChangedEvent extends Message {
  type: 'changed';
}

/** Any frame of the server but replies, including types this version does not know. */
export interface ServerEvent {
  type: string;
  [field: string]: unknown;
}

/** The connection's state, each time it changes. */
export type StateEvent =
  | { state: 'connecting'; attempt: number }
  | { state: 'online'; welcome: Welcome }
  | {
      state: 'offline';
      /** Why, for people: `connection lost`, the close reason... */
      reason: string;
      closeCode?: number;
      /** Failed attempts in a row so far. */
      attempt: number;
      /** When the next attempt is made (ms since the epoch), or null: not by itself (`error` says why). */
      retryAt: number | null;
      error?: BavardError;
    }
  | { state: 'closed' };

/** A room joined again after a reconnect; the messages missed meanwhile follow as `message` events. */
export interface RejoinedEvent {
  room: string;
  reply: JoinReply;
}
/** The server's history of `room` now ends at `seq`, below what was handed out: its database was replaced. */
export interface HistoryRestartedEvent {
  room: string;
  seq: number;
}

export interface EventMap {
  message: MessageEvent;
  presence: PresenceEvent;
  typing: TypingEvent;
  occupancy: OccupancyEvent;
  removed: RemovedEvent;
  closing: ClosingEvent;
  error: ErrorEvent;
  welcome: Welcome;
  edited: EditedEvent;
  deleted: DeletedEvent;
  reaction: ReactionEvent;
  read: ReadEvent;
  append: AppendEvent;
  finished: FinishedEvent;
  changed: ChangedEvent;
  /** Every server event (not replies), known or not, after its own type's handlers. */
  '*': ServerEvent;
  state: StateEvent;
  rejoined: RejoinedEvent;
  history_restarted: HistoryRestartedEvent;
}

export interface JoinReply {
  room: string;
  seq: number;
  member_count: number;
  members: User[];
  members_cursor?: string;
  /** The latest messages (join without `since`); empty with `since`: those come as events. */
  messages: Message[];
  recovered?: boolean;
  /** The room's change number when the reply was made. */
  rev?: number;
  /** With `since_rev`: messages up to `since` changed since (also handed out as `changed` events). */
  changed?: Message[];
  /** Messages of others after the user's read position (signed-in users). */
  unread?: number;
  [field: string]: unknown;
}
export interface SendReply {
  room: string;
  seq: number;
  ts: string;
  duplicate?: boolean;
  [field: string]: unknown;
}
export interface HistoryReply {
  messages: Message[];
  has_more: boolean;
  [field: string]: unknown;
}
export interface MembersReply {
  room: string;
  member_count: number;
  members: User[];
  cursor?: string;
  [field: string]: unknown;
}
export interface CreateReply {
  room: string;
  kind: RoomKind;
  topic: string;
  [field: string]: unknown;
}
export interface SanctionReply {
  until?: string;
  [field: string]: unknown;
}
export interface ChangeReply {
  room: string;
  seq: number;
  rev: number;
  [field: string]: unknown;
}
export interface ReadReply {
  room: string;
  seq: number;
  unread: number;
  [field: string]: unknown;
}
export interface SearchReply {
  messages: Message[];
  has_more: boolean;
  [field: string]: unknown;
}
export interface RefreshReply {
  expires: string;
  [field: string]: unknown;
}
export type Empty = Record<string, unknown>;
export type RoomKind = 'public' | 'private' | 'broadcast';
export type Role = 'member' | 'moderator' | 'owner';

interface Sanction {
  room: string;
  user: string;
  duration_secs?: number;
  reason?: string;
}

/** Each op of the protocol: its fields (without `op` and `id`) and its reply's fields. */
export interface Ops {
  join: { fields: { room: string; since?: number; limit?: number; since_rev?: number }; reply: JoinReply };
  leave: { fields: { room: string }; reply: Empty };
  send: {
    fields: { room: string; text: string; key?: string; reply_to?: number; stream?: boolean; [field: string]: unknown };
    reply: SendReply;
  };
  history: { fields: { room: string; before?: number; after?: number; limit?: number; thread?: number }; reply: HistoryReply };
  members: { fields: { room: string; cursor?: string; limit?: number }; reply: MembersReply };
  typing: { fields: { room: string }; reply: Empty };
  ping: { fields: Record<string, never>; reply: Empty };
  create: { fields: { room: string; kind?: RoomKind; topic?: string }; reply: CreateReply };
  add_member: { fields: { room: string; user: string; role?: Role }; reply: Empty };
  remove_member: { fields: { room: string; user: string }; reply: Empty };
  set_role: { fields: { room: string; user: string; role: Role }; reply: Empty };
  kick: { fields: Sanction; reply: SanctionReply };
  ban: { fields: Sanction; reply: SanctionReply };
  unban: { fields: { room: string; user: string; reason?: string }; reply: Empty };
  mute: { fields: Sanction; reply: SanctionReply };
  unmute: { fields: { room: string; user: string; reason?: string }; reply: Empty };
  refresh: { fields: { token: string }; reply: RefreshReply };
  dm: { fields: { user: string }; reply: { room: string; [field: string]: unknown } };
  edit: { fields: { room: string; seq: number; text: string }; reply: ChangeReply };
  delete: { fields: { room: string; seq: number }; reply: ChangeReply };
  react: { fields: { room: string; seq: number; emoji: string }; reply: ChangeReply };
  unreact: { fields: { room: string; seq: number; emoji: string }; reply: ChangeReply };
  read: { fields: { room: string; seq: number }; reply: ReadReply };
  search: { fields: { room: string; q: string; limit?: number; offset?: number }; reply: SearchReply };
  append: { fields: { room: string; seq: number; text: string }; reply: ChangeReply };
  finish: { fields: { room: string; seq: number }; reply: ChangeReply };
}

/**
 * What the client needs of a WebSocket: the standard browser API (Node's `ws` package has
 * it too). The handlers take `any` so that both implementations' own event types fit.
 */
export interface WebSocketLike {
  readonly readyState: number;
  /* eslint-disable @typescript-eslint/no-explicit-any */
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  /* eslint-enable @typescript-eslint/no-explicit-any */
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /** The server: `http://host:8000`, `https://chat.example.com`, or a `ws(s)://host/ws` URL. */
  url: string;
  /** A guest's nickname (open mode). */
  name?: string;
  /** A JWT, or a function giving a fresh one for each connection attempt. */
  token?: string | (() => string | Promise<string>);
  /** The WebSocket implementation; default `globalThis.WebSocket` (Node before 22: pass the `ws` package's). */
  WebSocket?: WebSocketConstructor;
  /** First wait before reconnecting, doubled at each failure (default 500 ms). */
  minBackoffMs?: number;
  /** Longest wait before reconnecting (default 15 s). */
  maxBackoffMs?: number;
  /** How long a request waits for its reply before the connection counts as dead (default 15 s). */
  requestTimeoutMs?: number;
  /** How often an idle connection is checked with a `ping` (default 25 s). */
  pingEveryMs?: number;
  /** Where an exception thrown by an event handler goes (default: console.error). */
  onHandlerError?: (error: unknown) => void;
}

type Handler = (event: any) => void;

interface Call {
  resolve: (reply: Record<string, unknown>) => void;
  reject: (error: BavardError) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface Room {
  name: string;
  /** The last seq handed out (meaningful once `synced`). */
  lastSeq: number;
  synced: boolean;
  /** The first join's `limit`. */
  limit: number;
  /** The highest change number seen, passed as `since_rev` on rejoin; null before the first join. */
  rev: number | null;
  /** Joined on the current connection, and caught up. */
  joined: boolean;
  /** A join is under way on the current connection. */
  joining: boolean;
  /** Live messages wait in `buffer` while a join or a gap's paging runs. */
  recovering: boolean;
  buffer: Message[];
  waiters: Array<{ resolve: (reply: JoinReply) => void; reject: (error: BavardError) => void }>;
}

interface OutgoingSend {
  fields: Ops['send']['fields'];
  resolve: (reply: SendReply) => void;
  reject: (error: BavardError) => void;
  inFlight: boolean;
  refusals: number;
  timer: ReturnType<typeof setTimeout> | null;
}

const RETRYABLE: ReadonlySet<string> = new Set(['rate_limited', 'internal', 'unavailable']);
const GAP_PAGE = 200;
const WEBSOCKET_OPEN = 1;

/** The URL of the JSON endpoint at `url`, with the identity in the query string. */
export function endpoint(url: string, name?: string, token?: string): string {
  const parsed = new URL(url.trim());
  const schemes: Record<string, string> = { 'ws:': 'ws:', 'http:': 'ws:', 'wss:': 'wss:', 'https:': 'wss:' };
  const scheme = schemes[parsed.protocol];
  if (!scheme) throw new BavardError('bad_request', `unsupported scheme ${parsed.protocol} in ${url} (use http(s):// or ws(s)://)`);
  // Browsers' URL objects refuse to switch between "special" and other schemes, so build it anew.
  const path = parsed.pathname === '/' || parsed.pathname === '' ? '/ws' : parsed.pathname;
  const query = new URLSearchParams(parsed.search);
  if (name !== undefined) query.set('name', name);
  if (token !== undefined) query.set('token', token);
  const search = query.toString();
  return `${scheme}//${parsed.host}${path}${search ? `?${search}` : ''}`;
}

function randomHex(bytes: number): string {
  const values = new Uint8Array(bytes);
  const crypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (crypto && crypto.getRandomValues) crypto.getRandomValues(values);
  else for (let i = 0; i < bytes; i += 1) values[i] = Math.floor(Math.random() * 256);
  return Array.from(values, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** `ms` give or take 25 %, so that clients cut off together do not come back in lockstep. */
function jittered(ms: number): number {
  return Math.round(ms * (0.75 + Math.random() * 0.5));
}

/** Close codes after which coming back cannot help: a binary frame, a policy refusal. */
function isFatalClose(code: number): boolean {
  return code === 1003 || code === 1008;
}

/**
 * A reconnecting connection to a Bavard server; see the module's comment. It starts
 * connecting when made; {@link connect} also waits for the first connection.
 */
export class Client {
  /** The current connection's `welcome` (who the server says we are, its limits); null while offline. */
  welcome: Welcome | null = null;

  private readonly options: Required<Omit<ClientOptions, 'name' | 'token' | 'WebSocket'>> &
    Pick<ClientOptions, 'name' | 'token'>;
  private readonly WebSocketImpl: WebSocketConstructor;
  private ws: WebSocketLike | null = null;
  private online = false;
  private closed = false;
  /** Counts connections, so that late answers of an old one are ignored. */
  private connection = 0;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private welcomeTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private lastError: string | undefined;
  private nextId = 1;
  private readonly calls = new Map<number, Call>();
  private readonly rooms = new Map<string, Room>();
  private readonly outbox: OutgoingSend[] = [];
  private readonly onlineWaiters: Array<{ resolve: () => void; reject: (error: BavardError) => void }> = [];
  private readonly handlers = new Map<string, Set<Handler>>();
  private readonly keyPrefix = randomHex(8);
  private keyCounter = 0;

  constructor(options: ClientOptions) {
    const WebSocketImpl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WebSocketImpl) {
      throw new BavardError(
        'bad_request',
        'no WebSocket implementation: pass one as the WebSocket option (on Node before 22, the ws package)',
      );
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

  // ------------------------------------------------------------------ events

  /** Calls `handler` for each event of `type` (see {@link EventMap}; any other string: server events of that type). Returns a function that stops it. */
  on<K extends keyof EventMap>(type: K, handler: (event: EventMap[K]) => void): () => void;
  on(type: string, handler: (event: ServerEvent) => void): () => void;
  on(type: string, handler: Handler): () => void {
    let set = this.handlers.get(type);
    if (!set) {
      set = new Set();
      this.handlers.set(type, set);
    }
    set.add(handler);
    return () => this.off(type, handler);
  }

  off(type: string, handler: Handler): void {
    this.handlers.get(type)?.delete(handler);
  }

  private emit(type: string, event: unknown): void {
    const set = this.handlers.get(type);
    if (!set) return;
    for (const handler of Array.from(set)) {
      try {
        handler(event);
      } catch (error) {
        this.options.onHandlerError(error);
      }
    }
  }

  private emitServer(frame: ServerEvent): void {
    this.emit(frame.type, frame);
    this.emit('*', frame);
  }

  // ------------------------------------------------------------------ state

  /** Whether a connection is up and welcomed. */
  get connected(): boolean {
    return this.online;
  }

  /** The last seq of `room` handed out (the room's last seq when it was joined, until a message came); undefined if not joined. */
  lastSeq(room: string): number | undefined {
    const state = this.rooms.get(room);
    return state && state.synced ? state.lastSeq : undefined;
  }

  /** The rooms this client is in (it rejoins them after each reconnect). */
  get joinedRooms(): string[] {
    return Array.from(this.rooms.keys());
  }

  /** Waits until the client is connected (at once if it is). */
  ready(): Promise<void> {
    if (this.closed) return Promise.reject(new BavardError('closed', 'the client is closed'));
    if (this.online) return Promise.resolve();
    return new Promise((resolve, reject) => this.onlineWaiters.push({ resolve, reject }));
  }

  // ------------------------------------------------------------------ connection

  private async open(): Promise<void> {
    this.clearRetry();
    if (this.closed || this.ws) return;
    this.emit('state', { state: 'connecting', attempt: this.attempt });
    let url: string;
    let ws: WebSocketLike;
    try {
      const token = typeof this.options.token === 'function' ? await this.options.token() : this.options.token;
      if (this.closed || this.ws) return;
      url = endpoint(this.options.url, this.options.name, token);
      ws = new this.WebSocketImpl(url);
    } catch (error) {
      this.scheduleReconnect(`cannot open a connection: ${(error as Error).message || error}`);
      return;
    }
    this.ws = ws;
    this.lastError = undefined;
    const connection = ++this.connection;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.welcomeTimer = setTimeout(() => {
        if (ws === this.ws && !this.online) this.drop('no welcome from the server');
      }, this.options.requestTimeoutMs);
    };
    ws.onmessage = (event: { data: unknown }) => {
      if (ws !== this.ws) return;
      let frame: unknown;
      try {
        frame = JSON.parse(typeof event.data === 'string' ? event.data : String(event.data));
      } catch {
        return;
      }
      if (frame && typeof frame === 'object' && typeof (frame as ServerEvent).type === 'string') {
        this.handleFrame(frame as ServerEvent, connection);
      }
    };
    ws.onerror = (event: unknown) => {
      // Node's ws tells why (e.g. "Unexpected server response: 401"); browsers never do.
      const message = (event as { message?: unknown } | null)?.message;
      if (typeof message === 'string' && message) this.lastError = message;
    };
    ws.onclose = (event: { code: number; reason: string }) => {
      if (ws !== this.ws) return;
      this.lost(event.code, event.reason);
    };
  }

  private clearRetry(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /** Forgets the connection that ended with `code` and decides what comes next. */
  private lost(code: number, reason: string): void {
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
  private forgetSocket(): void {
    const ws = this.ws;
    this.ws = null;
    this.online = false;
    this.welcome = null;
    if (this.welcomeTimer !== null) clearTimeout(this.welcomeTimer);
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    this.welcomeTimer = null;
    this.pingTimer = null;
    if (ws) {
      ws.onopen = null;
      ws.onmessage = null;
      ws.onclose = null;
      ws.onerror = null;
      try {
        ws.close(1000);
      } catch {
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
    for (const send of this.outbox) send.inFlight = false;
  }

  private scheduleReconnect(reason: string, closeCode?: number): void {
    if (this.closed) return;
    const base = Math.min(this.options.maxBackoffMs, this.options.minBackoffMs * 2 ** Math.min(this.attempt, 30));
    const delay = jittered(base);
    this.attempt += 1;
    const retryAt = Date.now() + delay;
    this.clearRetry();
    this.retryTimer = setTimeout(() => this.open(), delay);
    this.emit('state', { state: 'offline', reason, closeCode, attempt: this.attempt, retryAt });
  }

  /** Drops the current connection (e.g. the network went down) and reconnects. */
  drop(reason = 'dropped by the application'): void {
    if (!this.ws) return;
    this.forgetSocket();
    this.scheduleReconnect(reason);
  }

  /** Connects now if offline, without waiting for the backoff (and after a refusal too). */
  reconnectNow(): void {
    if (this.closed || this.ws) return;
    this.attempt = 0;
    this.open();
  }

  /** Closes the connection for good; what waits for an answer fails with `closed`. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.clearRetry();
    this.forgetSocket();
    const error = new BavardError('closed', 'the client was closed');
    this.failWaiters(error);
    for (const send of this.outbox.splice(0)) {
      if (send.timer !== null) clearTimeout(send.timer);
      send.reject(error);
    }
    for (const room of this.rooms.values()) for (const waiter of room.waiters.splice(0)) waiter.reject(error);
    this.rooms.clear();
    this.emit('state', { state: 'closed' });
  }

  private failWaiters(error: BavardError): void {
    for (const waiter of this.onlineWaiters.splice(0)) waiter.reject(error);
  }

  // ------------------------------------------------------------------ frames

  private handleFrame(frame: ServerEvent, connection: number): void {
    switch (frame.type) {
      case 'welcome':
        this.welcomed(frame as Welcome, connection);
        return;
      case 'reply':
        this.replied(frame);
        return;
      case 'message':
        this.received(frame as MessageEvent);
        return;
      case 'removed': {
        // A moderator took this connection out: the room is not rejoined.
        const room = this.rooms.get(String(frame.room));
        if (room) this.forgetRoom(room, new BavardError('forbidden', `removed from room ${room.name} (${String(frame.action)})`));
        break;
      }
      default:
        if (typeof frame.rev === 'number' && typeof frame.room === 'string') {
          // A change to a message (edited, deleted, reaction...): remembered for `since_rev`.
          const room = this.rooms.get(frame.room);
          if (room) room.rev = Math.max(room.rev ?? 0, frame.rev);
        }
        break;
    }
    this.emitServer(frame);
  }

  private welcomed(welcome: Welcome, connection: number): void {
    if (this.welcomeTimer !== null) clearTimeout(this.welcomeTimer);
    this.welcomeTimer = null;
    this.welcome = welcome;
    this.online = true;
    this.attempt = 0;
    this.pingTimer = setInterval(() => {
      this.call('ping', {}).catch(() => {});
    }, this.options.pingEveryMs);
    this.emit('state', { state: 'online', welcome });
    this.emitServer(welcome);
    for (const room of this.rooms.values()) this.joinRoom(room, connection);
    for (const send of this.outbox) if (!this.rooms.has(send.fields.room)) this.trySend(send);
    for (const waiter of this.onlineWaiters.splice(0)) waiter.resolve();
  }

  private replied(frame: ServerEvent): void {
    const call = this.calls.get(frame.id as number);
    if (!call) return;
    this.calls.delete(frame.id as number);
    clearTimeout(call.timer);
    if (frame.ok) {
      const { type: _type, id: _id, ok: _ok, ...fields } = frame;
      call.resolve(fields);
    } else {
      const body = (frame.error ?? {}) as { code?: string; message?: string };
      call.reject(new BavardError(body.code || 'internal', body.message || 'the server refused the request'));
    }
  }

  /** Sends one request on the current connection; fails at once when offline. */
  private call(op: string, fields: Record<string, unknown>): Promise<Record<string, unknown>> {
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
        if (ws === this.ws) this.drop('no answer from the server');
      }, this.options.requestTimeoutMs);
      this.calls.set(id, { resolve, reject, timer });
      try {
        ws.send(JSON.stringify({ ...fields, op, id }));
      } catch (error) {
        clearTimeout(timer);
        this.calls.delete(id);
        reject(new BavardError('disconnected', `cannot send: ${(error as Error).message || error}`));
      }
    });
  }

  // ------------------------------------------------------------------ rooms and messages

  /** Joins (or rejoins) `room` on the connection numbered `connection`, then hands out what it missed. */
  private async joinRoom(room: Room, connection: number): Promise<void> {
    room.joining = true;
    room.recovering = true;
    room.buffer = [];
    const rejoin = room.synced;
    const since = room.synced ? room.lastSeq : undefined;
    const fields: Ops['join']['fields'] =
      since === undefined ? { room: room.name, limit: room.limit } : { room: room.name, since };
    if (since !== undefined && room.rev !== null) fields.since_rev = room.rev;
    let reply: JoinReply;
    try {
      reply = (await this.call('join', fields)) as JoinReply;
    } catch (error) {
      const e = error as BavardError;
      if (connection !== this.connection || this.rooms.get(room.name) !== room || !e.fromServer) return; // the next connection rejoins
      room.joining = false;
      if (RETRYABLE.has(e.code)) {
        room.joining = true;
        setTimeout(() => {
          if (connection === this.connection && this.online && this.rooms.get(room.name) === room) this.joinRoom(room, connection);
        }, jittered(this.options.minBackoffMs));
        return;
      }
      this.forgetRoom(room, e);
      return;
    }
    if (connection !== this.connection || this.rooms.get(room.name) !== room) return;
    const messages = reply.messages ?? [];
    const changed = reply.changed ?? [];
    // The room's change number now (absent: 0); what changes after it comes as events.
    room.rev = Math.max(room.rev ?? 0, typeof reply.rev === 'number' ? reply.rev : 0);
    if (since === undefined) {
      room.lastSeq = reply.seq;
      room.synced = true;
    } else {
      reply.messages = [];
      if (reply.seq < room.lastSeq) {
        room.lastSeq = reply.seq;
        this.emit('history_restarted', { room: room.name, seq: reply.seq });
      }
    }
    if (rejoin) this.emit('rejoined', { room: room.name, reply });
    for (const waiter of room.waiters.splice(0)) waiter.resolve(reply);
    for (const message of changed) this.emitServer({ ...message, type: 'changed' });
    if (since !== undefined) {
      for (const message of messages) this.deliver(room, message, reply.seq);
      if (reply.recovered === false && room.lastSeq < reply.seq) {
        if (!(await this.page(room, reply.seq + 1, connection))) return;
      }
    }
    // Let the caller see the join reply before the live messages that followed it.
    setTimeout(() => {
      if (connection !== this.connection || this.rooms.get(room.name) !== room) return;
      room.joined = true;
      room.joining = false;
      for (const waiter of room.waiters.splice(0)) waiter.resolve(reply);
      this.catchUp(room, connection);
      for (const send of this.outbox) if (send.fields.room === room.name) this.trySend(send);
    }, 0);
  }

  /** Hands out `message` if it is the next one of `room` (and not past `upTo`). */
  private deliver(room: Room, message: Message, upTo = Infinity): void {
    if (message.seq <= room.lastSeq || message.seq > upTo) return;
    room.lastSeq = message.seq;
    const event = message as MessageEvent;
    if (event.type === undefined) (event as { type: string }).type = 'message';
    this.emit('message', event);
    this.emit('*', event);
  }

  /**
   * Pages `room`'s messages after its last seq and before `before` with `history`,
   * handing them out; false if the connection was lost meanwhile.
   */
  private async page(room: Room, before: number, connection: number): Promise<boolean> {
    while (room.lastSeq < before - 1) {
      const from = room.lastSeq;
      let page: HistoryReply;
      try {
        page = (await this.call('history', { room: room.name, after: from, before, limit: GAP_PAGE })) as HistoryReply;
      } catch (error) {
        const e = error as BavardError;
        if (connection !== this.connection) return false;
        if (e.fromServer && !RETRYABLE.has(e.code)) this.forgetRoom(room, e);
        else if (this.ws) this.drop(`cannot read the missed messages: ${e.message}`);
        return false;
      }
      if (connection !== this.connection || this.rooms.get(room.name) !== room) return false;
      for (const message of page.messages) this.deliver(room, message, before - 1);
      if (room.lastSeq === from || !page.has_more) {
        // The server has nothing more in that range (never expected: seqs have no gaps).
        if (room.lastSeq < before - 1) room.lastSeq = before - 1;
        break;
      }
    }
    return true;
  }

  /** Hands out the live messages that waited during a join or a paging, filling any gap first. */
  private async catchUp(room: Room, connection: number): Promise<void> {
    room.recovering = true;
    for (;;) {
      room.buffer.sort((a, b) => a.seq - b.seq);
      const next = room.buffer.find((m) => m.seq > room.lastSeq);
      if (next && next.seq > room.lastSeq + 1) {
        if (!(await this.page(room, next.seq, connection))) return;
        continue;
      }
      const waiting = room.buffer.splice(0);
      for (const message of waiting) this.deliver(room, message);
      if (room.buffer.length === 0) break;
    }
    room.recovering = false;
  }

  private received(message: MessageEvent): void {
    const room = this.rooms.get(message.room);
    if (!room) return;
    if (room.recovering || !room.joined) {
      room.buffer.push(message);
      return;
    }
    if (message.seq <= room.lastSeq) return;
    if (message.seq === room.lastSeq + 1) {
      this.deliver(room, message);
      return;
    }
    // Something is missing between what was handed out and this message: fetch it first.
    room.buffer.push(message);
    this.catchUp(room, this.connection);
  }

  private forgetRoom(room: Room, error: BavardError): void {
    if (this.rooms.get(room.name) !== room) return;
    this.rooms.delete(room.name);
    for (const waiter of room.waiters.splice(0)) waiter.reject(error);
    // Sends that waited for the room go out now, and get the server's answer.
    for (const send of this.outbox) if (send.fields.room === room.name) this.trySend(send);
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
  join(room: string, options: { since?: number; limit?: number } = {}): Promise<JoinReply> {
    if (this.closed) return Promise.reject(new BavardError('closed', 'the client is closed'));
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
    const joined = new Promise<JoinReply>((resolve, reject) => state!.waiters.push({ resolve, reject }));
    // A room already joined and caught up joins again from the last seq handed out.
    if (this.online && !state.joining && (fresh || state.joined)) {
      state.joined = false;
      this.joinRoom(state, this.connection);
    }
    return joined;
  }

  /** Leaves `room`: its events stop, and it is not rejoined. */
  async leave(room: string): Promise<void> {
    const state = this.rooms.get(room);
    for (const send of this.outbox.filter((s) => s.fields.room === room && !s.inFlight)) {
      this.settle(send);
      send.reject(new BavardError('not_found', `room ${room} was left before the message was sent`));
    }
    if (state) this.forgetRoom(state, new BavardError('not_found', `room ${room} was left`));
    if (!this.online || !state) return;
    try {
      await this.call('leave', { room });
    } catch (error) {
      const e = error as BavardError;
      if (e.fromServer && e.code !== 'not_found') throw e;
    }
  }

  /**
   * Sends `text` to `room` and resolves with its `seq` and `ts` once the server has
   * stored it. While the connection is down it waits, and it is resent with the same
   * `key` after each reconnect (and after a while when the server is busy), so it is
   * stored once. Fails with the server's error for other refusals (`too_large`, `forbidden`...).
   */
  send(
    room: string,
    text: string,
    options: { key?: string; reply_to?: number; stream?: boolean; [field: string]: unknown } = {},
  ): Promise<SendReply> {
    if (this.closed) return Promise.reject(new BavardError('closed', 'the client is closed'));
    this.keyCounter += 1;
    const key = options.key ?? `j${this.keyPrefix}-${this.keyCounter}`;
    return new Promise((resolve, reject) => {
      const send: OutgoingSend = {
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

  private settle(send: OutgoingSend): void {
    const index = this.outbox.indexOf(send);
    if (index >= 0) this.outbox.splice(index, 1);
    if (send.timer !== null) clearTimeout(send.timer);
    send.timer = null;
  }

  private trySend(send: OutgoingSend): void {
    if (send.inFlight || send.timer !== null || !this.online) return;
    const room = this.rooms.get(send.fields.room);
    if (room && !room.joined) return; // sent once the room is rejoined
    send.inFlight = true;
    const connection = this.connection;
    this.call('send', send.fields).then(
      (reply) => {
        this.settle(send);
        send.resolve(reply as SendReply);
      },
      (error: BavardError) => {
        send.inFlight = false;
        if (!this.outbox.includes(send)) return;
        if (!error.fromServer) return; // resent after the reconnect
        if (RETRYABLE.has(error.code)) {
          send.refusals += 1;
          const wait = jittered(Math.min(this.options.maxBackoffMs, this.options.minBackoffMs * 2 ** Math.min(send.refusals, 30)));
          send.timer = setTimeout(() => {
            send.timer = null;
            if (connection === this.connection || this.online) this.trySend(send);
          }, wait);
          return;
        }
        this.settle(send);
        send.reject(error);
      },
    );
  }

  /** Messages sent and not yet acknowledged. */
  get unacknowledged(): number {
    return this.outbox.length;
  }

  /**
   * Any op: waits for the connection, sends `{op, ...fields}` and resolves with the
   * reply's fields (or fails with a {@link BavardError}). Not retried if the connection
   * is lost before the answer (`disconnected`): the op may or may not have happened.
   */
  request<K extends keyof Ops>(op: K, fields: Ops[K]['fields']): Promise<Ops[K]['reply']>;
  request(op: string, fields?: Record<string, unknown>): Promise<Record<string, unknown>>;
  async request(op: string, fields: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    await this.ready();
    return this.call(op, fields);
  }

  /** Like {@link request}, retried after a reconnect (for reads, which may be repeated). */
  private async retried<K extends keyof Ops>(op: K, fields: Ops[K]['fields']): Promise<Ops[K]['reply']> {
    for (;;) {
      try {
        return (await this.request(op, fields)) as Ops[K]['reply'];
      } catch (error) {
        if ((error as BavardError).fromServer || (error as BavardError).code === 'closed' || (error as BavardError).code === 'refused') throw error;
      }
    }
  }

  /** A page of stored messages, oldest first (`before`: page backward; `after`: forward). */
  history(
    room: string,
    options: { before?: number; after?: number; limit?: number; thread?: number } = {},
  ): Promise<HistoryReply> {
    return this.retried('history', { ...options, room });
  }

  /** A page of the users online in `room` (pass the reply's `cursor` for the next). */
  members(room: string, options: { cursor?: string; limit?: number } = {}): Promise<MembersReply> {
    return this.retried('members', { ...options, room });
  }

  /** Tells the room's other users that this one is typing (the server sends at most one event per 2 s). */
  async typing(room: string): Promise<void> {
    await this.request('typing', { room });
  }

  /** Creates a room owned by the user (guests: public rooms only). */
  create(room: string, options: { kind?: RoomKind; topic?: string } = {}): Promise<CreateReply> {
    return this.request('create', { ...options, room });
  }

  addMember(room: string, user: string, role?: Role): Promise<Empty> {
    return this.request('add_member', role ? { room, user, role } : { room, user });
  }

  removeMember(room: string, user: string): Promise<Empty> {
    return this.request('remove_member', { room, user });
  }

  setRole(room: string, user: string, role: Role): Promise<Empty> {
    return this.request('set_role', { room, user, role });
  }

  kick(room: string, user: string, options: { duration_secs?: number; reason?: string } = {}): Promise<SanctionReply> {
    return this.request('kick', { ...options, room, user });
  }

  ban(room: string, user: string, options: { duration_secs?: number; reason?: string } = {}): Promise<SanctionReply> {
    return this.request('ban', { ...options, room, user });
  }

  unban(room: string, user: string, options: { reason?: string } = {}): Promise<Empty> {
    return this.request('unban', { ...options, room, user });
  }

  mute(room: string, user: string, options: { duration_secs?: number; reason?: string } = {}): Promise<SanctionReply> {
    return this.request('mute', { ...options, room, user });
  }

  unmute(room: string, user: string, options: { reason?: string } = {}): Promise<Empty> {
    return this.request('unmute', { ...options, room, user });
  }

  /** Moves this connection's expiry to a fresh token's (the same user's). */
  refresh(token: string): Promise<RefreshReply> {
    return this.request('refresh', { token });
  }

  /** The direct room of this (signed-in) user and `user`; join it like any room. */
  dm(user: string): Promise<{ room: string; [field: string]: unknown }> {
    return this.request('dm', { user });
  }

  /** Replaces the text of one's message. */
  edit(room: string, seq: number, text: string): Promise<ChangeReply> {
    return this.request('edit', { room, seq, text });
  }

  /** Deletes a message (one's own; moderators any). */
  delete(room: string, seq: number): Promise<ChangeReply> {
    return this.request('delete', { room, seq });
  }

  react(room: string, seq: number, emoji: string): Promise<ChangeReply> {
    return this.request('react', { room, seq, emoji });
  }

  unreact(room: string, seq: number, emoji: string): Promise<ChangeReply> {
    return this.request('unreact', { room, seq, emoji });
  }

  /** Moves the user's read position in `room` forward to `seq`. */
  read(room: string, seq: number): Promise<ReadReply> {
    return this.request('read', { room, seq });
  }

  /** Messages of `room` matching the words of `q`, best first. */
  search(room: string, q: string, options: { limit?: number; offset?: number } = {}): Promise<SearchReply> {
    return this.request('search', { ...options, room, q });
  }

  /** Adds text to one's streamed message (sent with `send(room, text, {stream: true})`). */
  append(room: string, seq: number, text: string): Promise<ChangeReply> {
    return this.request('append', { room, seq, text });
  }

  /** Ends one's streamed message. */
  finish(room: string, seq: number): Promise<ChangeReply> {
    return this.request('finish', { room, seq });
  }

  /** Checks that the server answers. */
  async ping(): Promise<void> {
    await this.request('ping', {});
  }
}

/**
 * Makes a {@link Client} and waits for its first connection; fails (and closes it) if
 * that first attempt fails, so that a wrong URL, name or token is reported at once.
 */
export function connect(options: ClientOptions): Promise<Client> {
  const client = new Client(options);
  return new Promise((resolve, reject) => {
    const stop = client.on('state', (event) => {
      if (event.state === 'online') {
        stop();
        resolve(client);
      } else if (event.state === 'offline' || event.state === 'closed') {
        stop();
        client.close();
        reject(event.state === 'offline' ? (event.error ?? new BavardError('disconnected', event.reason, { closeCode: event.closeCode })) : new BavardError('closed', 'the client was closed'));
      }
    });
  });
}
