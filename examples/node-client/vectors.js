'use strict';
// Checks this client's signing against docs/protocol-vectors.json: prints one JSON object,
// {"checked": N, "mismatches": [...]}, and exits 1 on any mismatch.
//
//   node vectors.js ../../docs/protocol-vectors.json
const fs = require('fs');
const { canonicalBytes, signature } = require('./cellframe');

const vectors = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const secret = Buffer.from(vectors.key.secret_hex, 'hex');
const mismatches = [];
for (const c of vectors.cases) {
  const m = {
    exchange: c.exchange, target: c.routing_key, messageId: c.message_id,
    keyId: vectors.key.id, timestamp: c.timestamp, expires: c.expires,
    replyTo: c.reply_to, sender: c.sender, correlationId: c.correlation_id,
    body: Buffer.from(c.body, 'utf8'),
  };
  if (canonicalBytes(m).toString('hex') !== c.canonical_hex) mismatches.push(`${c.name}: canonical bytes`);
  if (signature(secret, m) !== c.signature) mismatches.push(`${c.name}: signature`);
  // The headers as this client would send them: x-cf-ts and x-cellframe-expires as text.
  if (String(c.timestamp) !== c.amqp.headers['x-cf-ts'].replace(/\.0$/, '')) {
    mismatches.push(`${c.name}: x-cf-ts`);
  }
}
process.stdout.write(JSON.stringify({ checked: vectors.cases.length, mismatches }) + '\n');
process.exit(mismatches.length ? 1 : 0);
