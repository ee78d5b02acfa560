// Bavard benchmark peer "node-ws": the original plain-text chat protocol on
// Node.js with the `ws` package.
//
//   node server.mjs [PORT] [HOST]      (or PORT=... HOST=... node server.mjs)
//
// WebSocket at /ws/chat (room "chat") and /ws/chat/{room}. Every text frame T
// a client sends is broadcast to every client of the room, sender included, as
// the text frame "Message reçu : T"; when a client disconnects the others get
// "Un utilisateur s'est déconnecté.". Nothing is persisted.
//
// Each broadcast is encoded once: one Buffer (prefix bytes + the received
// UTF-8 payload, which ws has already validated) is sent as a text frame to
// every client of the room.
import http from 'node:http';
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] ?? process.env.PORT ?? 8080);
const host = process.argv[3] ?? process.env.HOST ?? '127.0.0.1';

const PREFIX = Buffer.from('Message reçu : ', 'utf8');
const GOODBYE = Buffer.from("Un utilisateur s'est déconnecté.", 'utf8');
const TEXT = { binary: false };

/** room name -> Set of WebSocket */
const rooms = new Map();

function roomOf(url) {
  const path = url.split('?', 1)[0];
  if (path === '/ws/chat') return 'chat';
  const m = /^\/ws\/chat\/([^/]+)$/.exec(path);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

function broadcast(members, buf) {
  for (const client of members) {
    if (client.readyState === 1 /* OPEN */) client.send(buf, TEXT);
  }
}

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('Not Found\n');
});

server.on('upgrade', (req, socket, head) => {
  const room = roomOf(req.url ?? '');
  if (room === null) {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    socket.setNoDelay(true);
    let members = rooms.get(room);
    if (!members) {
      members = new Set();
      rooms.set(room, members);
    }
    members.add(ws);

    ws.on('message', (data, isBinary) => {
      if (isBinary) return; // the protocol only has text frames
      const payload = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
      broadcast(members, Buffer.concat([PREFIX, payload]));
    });
    ws.on('error', () => {}); // a 'close' follows
    ws.on('close', () => {
      members.delete(ws);
      if (members.size === 0) {
        if (rooms.get(room) === members) rooms.delete(room);
        return;
      }
      broadcast(members, GOODBYE);
    });
  });
});

server.listen(port, host, () => {
  console.error(`node-ws peer listening on ${host}:${port}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
