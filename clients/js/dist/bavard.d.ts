/** The error codes of the protocol (docs/protocol.md, section 4.1); newer servers may add codes. */
export type ServerErrorCode = 'bad_request' | 'unknown_op' | 'not_found' | 'forbidden' | 'rate_limited' | 'too_large' | 'conflict' | 'unauthorized' | 'internal' | 'unavailable';
/**
 * Codes of failures seen by the client rather than answered by the server:
 * `disconnected` (the connection was lost before the answer came), `timeout` (no answer
 * in time: the connection is dropped and made again), `closed` (the client was closed),
 * `refused` (the server refused the connection for good: a bad token or name, a close
 * with 1003 or 1008).
 */
export type ClientErrorCode = 'disconnected' | 'timeout' | 'closed' | 'refused';
/** A failed request or connection. `code` is the server's error code or a {@link ClientErrorCode}. */
export declare class BavardError extends Error {
    /** The server's code (an unknown one is to be treated like `internal`), or the client's. */
    readonly code: ServerErrorCode | ClientErrorCode | (string & {});
    /** The WebSocket close code, when the connection was closed. */
    readonly closeCode?: number;
    /** The HTTP status of a refused upgrade, when the WebSocket implementation tells it. */
    readonly status?: number;
    constructor(code: string, message: string, extra?: {
        closeCode?: number;
        status?: number;
    });
    /** True for an answer of the server (an `error` body), false for a connection problem. */
    get fromServer(): boolean;
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
    reactions?: Array<{
        emoji: string;
        count: number;
        me?: boolean;
    }>;
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
    limits: {
        max_frame_bytes: number;
        max_text_chars: number;
    };
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
    error: {
        code: string;
        message: string;
    };
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
export type StateEvent = {
    state: 'connecting';
    attempt: number;
} | {
    state: 'online';
    welcome: Welcome;
} | {
    state: 'offline';
    /** Why, for people: `connection lost`, the close reason... */
    reason: string;
    closeCode?: number;
    /** Failed attempts in a row so far. */
    attempt: number;
    /** When the next attempt is made (ms since the epoch), or null: not by itself (`error` says why). */
    retryAt: number | null;
    error?: BavardError;
} | {
    state: 'closed';
};
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
    join: {
        fields: {
            room: string;
            since?: number;
            limit?: number;
            since_rev?: number;
        };
        reply: JoinReply;
    };
    leave: {
        fields: {
            room: string;
        };
        reply: Empty;
    };
    send: {
        fields: {
            room: string;
            text: string;
            key?: string;
            reply_to?: number;
            stream?: boolean;
            [field: string]: unknown;
        };
        reply: SendReply;
    };
    history: {
        fields: {
            room: string;
            before?: number;
            after?: number;
            limit?: number;
            thread?: number;
        };
        reply: HistoryReply;
    };
    members: {
        fields: {
            room: string;
            cursor?: string;
            limit?: number;
        };
        reply: MembersReply;
    };
    typing: {
        fields: {
            room: string;
        };
        reply: Empty;
    };
    ping: {
        fields: Record<string, never>;
        reply: Empty;
    };
    create: {
        fields: {
            room: string;
            kind?: RoomKind;
            topic?: string;
        };
        reply: CreateReply;
    };
    add_member: {
        fields: {
            room: string;
            user: string;
            role?: Role;
        };
        reply: Empty;
    };
    remove_member: {
        fields: {
            room: string;
            user: string;
        };
        reply: Empty;
    };
    set_role: {
        fields: {
            room: string;
            user: string;
            role: Role;
        };
        reply: Empty;
    };
    kick: {
        fields: Sanction;
        reply: SanctionReply;
    };
    ban: {
        fields: Sanction;
        reply: SanctionReply;
    };
    unban: {
        fields: {
            room: string;
            user: string;
            reason?: string;
        };
        reply: Empty;
    };
    mute: {
        fields: Sanction;
        reply: SanctionReply;
    };
    unmute: {
        fields: {
            room: string;
            user: string;
            reason?: string;
        };
        reply: Empty;
    };
    refresh: {
        fields: {
            token: string;
        };
        reply: RefreshReply;
    };
    dm: {
        fields: {
            user: string;
        };
        reply: {
            room: string;
            [field: string]: unknown;
        };
    };
    edit: {
        fields: {
            room: string;
            seq: number;
            text: string;
        };
        reply: ChangeReply;
    };
    delete: {
        fields: {
            room: string;
            seq: number;
        };
        reply: ChangeReply;
    };
    react: {
        fields: {
            room: string;
            seq: number;
            emoji: string;
        };
        reply: ChangeReply;
    };
    unreact: {
        fields: {
            room: string;
            seq: number;
            emoji: string;
        };
        reply: ChangeReply;
    };
    read: {
        fields: {
            room: string;
            seq: number;
        };
        reply: ReadReply;
    };
    search: {
        fields: {
            room: string;
            q: string;
            limit?: number;
            offset?: number;
        };
        reply: SearchReply;
    };
    append: {
        fields: {
            room: string;
            seq: number;
            text: string;
        };
        reply: ChangeReply;
    };
    finish: {
        fields: {
            room: string;
            seq: number;
        };
        reply: ChangeReply;
    };
}
/**
 * What the client needs of a WebSocket: the standard browser API (Node's `ws` package has
 * it too). The handlers take `any` so that both implementations' own event types fit.
 */
export interface WebSocketLike {
    readonly readyState: number;
    onopen: ((event: any) => void) | null;
    onmessage: ((event: any) => void) | null;
    onclose: ((event: any) => void) | null;
    onerror: ((event: any) => void) | null;
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
/** The URL of the JSON endpoint at `url`, with the identity in the query string. */
export declare function endpoint(url: string, name?: string, token?: string): string;
/**
 * A reconnecting connection to a Bavard server; see the module's comment. It starts
 * connecting when made; {@link connect} also waits for the first connection.
 */
export declare class Client {
    /** The current connection's `welcome` (who the server says we are, its limits); null while offline. */
    welcome: Welcome | null;
    private readonly options;
    private readonly WebSocketImpl;
    private ws;
    private online;
    private closed;
    /** Counts connections, so that late answers of an old one are ignored. */
    private connection;
    private attempt;
    private retryTimer;
    private welcomeTimer;
    private pingTimer;
    private lastError;
    private nextId;
    private readonly calls;
    private readonly rooms;
    private readonly outbox;
    private readonly onlineWaiters;
    private readonly handlers;
    private readonly keyPrefix;
    private keyCounter;
    constructor(options: ClientOptions);
    /** Calls `handler` for each event of `type` (see {@link EventMap}; any other string: server events of that type). Returns a function that stops it. */
    on<K extends keyof EventMap>(type: K, handler: (event: EventMap[K]) => void): () => void;
    on(type: string, handler: (event: ServerEvent) => void): () => void;
    off(type: string, handler: Handler): void;
    private emit;
    private emitServer;
    /** Whether a connection is up and welcomed. */
    get connected(): boolean;
    /** The last seq of `room` handed out (the room's last seq when it was joined, until a message came); undefined if not joined. */
    lastSeq(room: string): number | undefined;
    /** The rooms this client is in (it rejoins them after each reconnect). */
    get joinedRooms(): string[];
    /** Waits until the client is connected (at once if it is). */
    ready(): Promise<void>;
    private open;
    private clearRetry;
    /** Forgets the connection that ended with `code` and decides what comes next. */
    private lost;
    /** Drops the socket, failing what waited on it; rooms and unacknowledged sends stay for the next one. */
    private forgetSocket;
    private scheduleReconnect;
    /** Drops the current connection (e.g. the network went down) and reconnects. */
    drop(reason?: string): void;
    /** Connects now if offline, without waiting for the backoff (and after a refusal too). */
    reconnectNow(): void;
    /** Closes the connection for good; what waits for an answer fails with `closed`. */
    close(): void;
    private failWaiters;
    private handleFrame;
    private welcomed;
    private replied;
    /** Sends one request on the current connection; fails at once when offline. */
    private call;
    /** Joins (or rejoins) `room` on the connection numbered `connection`, then hands out what it missed. */
    private joinRoom;
    /** Hands out `message` if it is the next one of `room` (and not past `upTo`). */
    private deliver;
    /**
     * Pages `room`'s messages after its last seq and before `before` with `history`,
     * handing them out; false if the connection was lost meanwhile.
     */
    private page;
    /** Hands out the live messages that waited during a join or a paging, filling any gap first. */
    private catchUp;
    private received;
    private forgetRoom;
    /**
     * Joins `room`; it is joined again after each reconnect, and its messages come as
     * `message` events, each once and in seq order. Without `since`, the reply's
     * `messages` hold the latest `limit` (default 50) messages, as history. With `since`
     * (the last seq the application has), every message after it comes as an event
     * (paged with `history` past the server's recovery limit) and the reply's `messages`
     * is empty. Resolves once joined (waiting for the connection if needed).
     */
    join(room: string, options?: {
        since?: number;
        limit?: number;
    }): Promise<JoinReply>;
    /** Leaves `room`: its events stop, and it is not rejoined. */
    leave(room: string): Promise<void>;
    /**
     * Sends `text` to `room` and resolves with its `seq` and `ts` once the server has
     * stored it. While the connection is down it waits, and it is resent with the same
     * `key` after each reconnect (and after a while when the server is busy), so it is
     * stored once. Fails with the server's error for other refusals (`too_large`, `forbidden`...).
     */
    send(room: string, text: string, options?: {
        key?: string;
        reply_to?: number;
        stream?: boolean;
        [field: string]: unknown;
    }): Promise<SendReply>;
    private settle;
    private trySend;
    /** Messages sent and not yet acknowledged. */
    get unacknowledged(): number;
    /**
     * Any op: waits for the connection, sends `{op, ...fields}` and resolves with the
     * reply's fields (or fails with a {@link BavardError}). Not retried if the connection
     * is lost before the answer (`disconnected`): the op may or may not have happened.
     */
    request<K extends keyof Ops>(op: K, fields: Ops[K]['fields']): Promise<Ops[K]['reply']>;
    request(op: string, fields?: Record<string, unknown>): Promise<Record<string, unknown>>;
    /** Like {@link request}, retried after a reconnect (for reads, which may be repeated). */
    private retried;
    /** A page of stored messages, oldest first (`before`: page backward; `after`: forward). */
    history(room: string, options?: {
        before?: number;
        after?: number;
        limit?: number;
        thread?: number;
    }): Promise<HistoryReply>;
    /** A page of the users online in `room` (pass the reply's `cursor` for the next). */
    members(room: string, options?: {
        cursor?: string;
        limit?: number;
    }): Promise<MembersReply>;
    /** Tells the room's other users that this one is typing (the server sends at most one event per 2 s). */
    typing(room: string): Promise<void>;
    /** Creates a room owned by the user (guests: public rooms only). */
    create(room: string, options?: {
        kind?: RoomKind;
        topic?: string;
    }): Promise<CreateReply>;
    addMember(room: string, user: string, role?: Role): Promise<Empty>;
    removeMember(room: string, user: string): Promise<Empty>;
    setRole(room: string, user: string, role: Role): Promise<Empty>;
    kick(room: string, user: string, options?: {
        duration_secs?: number;
        reason?: string;
    }): Promise<SanctionReply>;
    ban(room: string, user: string, options?: {
        duration_secs?: number;
        reason?: string;
    }): Promise<SanctionReply>;
    unban(room: string, user: string, options?: {
        reason?: string;
    }): Promise<Empty>;
    mute(room: string, user: string, options?: {
        duration_secs?: number;
        reason?: string;
    }): Promise<SanctionReply>;
    unmute(room: string, user: string, options?: {
        reason?: string;
    }): Promise<Empty>;
    /** Moves this connection's expiry to a fresh token's (the same user's). */
    refresh(token: string): Promise<RefreshReply>;
    /** The direct room of this (signed-in) user and `user`; join it like any room. */
    dm(user: string): Promise<{
        room: string;
        [field: string]: unknown;
    }>;
    /** Replaces the text of one's message. */
    edit(room: string, seq: number, text: string): Promise<ChangeReply>;
    /** Deletes a message (one's own; moderators any). */
    delete(room: string, seq: number): Promise<ChangeReply>;
    react(room: string, seq: number, emoji: string): Promise<ChangeReply>;
    unreact(room: string, seq: number, emoji: string): Promise<ChangeReply>;
    /** Moves the user's read position in `room` forward to `seq`. */
    read(room: string, seq: number): Promise<ReadReply>;
    /** Messages of `room` matching the words of `q`, best first. */
    search(room: string, q: string, options?: {
        limit?: number;
        offset?: number;
    }): Promise<SearchReply>;
    /** Adds text to one's streamed message (sent with `send(room, text, {stream: true})`). */
    append(room: string, seq: number, text: string): Promise<ChangeReply>;
    /** Ends one's streamed message. */
    finish(room: string, seq: number): Promise<ChangeReply>;
    /** Checks that the server answers. */
    ping(): Promise<void>;
}
/**
 * Makes a {@link Client} and waits for its first connection; fails (and closes it) if
 * that first attempt fails, so that a wrong URL, name or token is reported at once.
 */
export declare function connect(options: ClientOptions): Promise<Client>;
export {};
