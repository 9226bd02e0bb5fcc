// A real SMTP server for the end-to-end run (Nodemailer's smtp-server):
// every message the proxy sends is written to DIR as <n>.eml, raw.
// usage: node smtp-server.mjs PORT DIR
import { SMTPServer } from 'smtp-server';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [port, dir] = process.argv.slice(2);
mkdirSync(dir, { recursive: true });
let n = 0;
const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS'],
  logger: false,
  // A mailbox that does not exist: recipients named reject-… are refused for
  // good (550), as a relay refuses an unknown address.
  onRcptTo(address, session, callback) {
    if (address.address.startsWith('reject-')) {
      const err = new Error('5.1.1 No such user');
      err.responseCode = 550;
      return callback(err);
    }
    callback();
  },
  onData(stream, session, callback) {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => {
      n += 1;
      const to = session.envelope.rcptTo.map((r) => r.address).join(',');
      writeFileSync(join(dir, `${Date.now()}-${n}.eml`), `X-Envelope-To: ${to}\r\n${Buffer.concat(chunks)}`);
      callback();
    });
  },
});
server.listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
