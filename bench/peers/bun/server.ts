// Bavard benchmark peer "bun": the original plain-text chat protocol on Bun's
// built-in WebSocket server and its pub/sub (uWebSockets underneath).
//
//   bun server.ts [PORT] [HOST]      (or PORT=... HOST=... bun server.ts)
//
// WebSocket at /ws/chat (room "chat") and /ws/chat/{room}. Every text frame T
// a client sends is broadcast to every client of the room, sender included, as
// the text frame "Message reçu : T"; when a client disconnects the others get
// "Un utilisateur s'est déconnecté.". Nothing is persisted.
//
// Each client subscribes to its room's topic. Broadcasts use server.publish,
// which (unlike ws.publish) does not skip the sender: the server itself is
// not a subscriber, so every subscriber, sender included, gets the frame
// exactly once, and the frame is encoded once per publish.

const port = Number(Bun.argv[2] ?? process.env.PORT ?? 8080);
const hostname = Bun.argv[3] ?? process.env.HOST ?? "127.0.0.1";

const PREFIX = "Message reçu : ";
const GOODBYE = "Un utilisateur s'est déconnecté.";

type Data = { room: string };

function roomOf(pathname: string): string | null {
  if (pathname === "/ws/chat") return "chat";
  const m = /^\/ws\/chat\/([^/]+)$/.exec(pathname);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

const server = Bun.serve<Data>({
  hostname,
  port,
  fetch(req, server) {
    const room = roomOf(new URL(req.url).pathname);
    if (room === null) return new Response("Not Found\n", { status: 404 });
    if (server.upgrade(req, { data: { room } })) return undefined;
    return new Response("Expected a WebSocket upgrade\n", { status: 400 });
  },
  websocket: {
    perMessageDeflate: false,
    // The draft has no idle timeout either; don't drop quiet benchmark clients.
    idleTimeout: 0,
    open(ws) {
      ws.subscribe(ws.data.room);
    },
    message(ws, message) {
      if (typeof message !== "string") return; // the protocol only has text frames
      server.publish(ws.data.room, PREFIX + message);
    },
    close(ws) {
      // The closing socket is already unsubscribed: only the others get this.
      server.publish(ws.data.room, GOODBYE);
    },
  },
});

console.error(`bun peer listening on ${server.hostname}:${server.port}`);

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => process.exit(0));
}
