// Type-checked (not run) by `npm run build`: what an application writes against the
// published declarations, the browser's own WebSocket included, compiles in strict mode.
import { BavardError, Client, connect, type Message } from '../dist/bavard.js';

export async function usage(): Promise<void> {
  const client = new Client({ url: 'http://127.0.0.1:8000', name: 'alice', WebSocket });
  client.on('message', (m: Message) => console.log(m.seq, m.text, m.from.name));
  client.on('edited', (e) => console.log(e.seq, e.text, e.rev));
  client.on('state', (s) => (s.state === 'offline' ? console.log(s.reason, s.retryAt) : undefined));
  client.on('a-type-from-a-newer-server', (e) => console.log(e.type));
  const joined = await client.join('general', { limit: 20 });
  console.log(joined.messages.length, joined.member_count);
  const { seq, ts } = await client.send('general', 'hello', { key: 'k-1' });
  console.log(seq, ts);
  const edited = await client.request('edit', { room: 'general', seq, text: 'hello!' });
  console.log(edited.rev);
  const later = await client.request('an_op_from_a_newer_server', { any: 'field' });
  console.log(later);
  try {
    await client.kick('general', 'u_2', { duration_secs: 60 });
  } catch (e) {
    if (e instanceof BavardError && e.code === 'forbidden') console.log(e.message);
  }
  (await connect({ url: 'ws://127.0.0.1:8000/ws', token: () => 'jwt' })).close();
}
