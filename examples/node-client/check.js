'use strict';
// Talks to a running cellframe cluster the way a service would, and prints one JSON object
// saying what each exchange gave. tests/test_node_client.py runs it against real nodes.
//
//   node check.js CONFIG.json
//
// CONFIG: {"url": "amqp://...", "exchange": "...", "queuePrefix": "...", "keyId": "...",
//          "keys": {"<id>": "<secret as hex>"}, "nodes": ["n1", "n2"], "role": "tally",
//          "cell": "n1"}
const fs = require('fs');
const { Client } = require('./cellframe');
const { Sym, plist } = require('./sexp');

const QUIET_MS = 1500; // how long a refused message is given to (wrongly) be answered

function head(answer) {
  return Array.isArray(answer.expr) && answer.expr[0] instanceof Sym ? answer.expr[0].name : null;
}

async function rejectedBy(client, node) {
  const id = await client.send(`node.${node}`, '(status)');
  const [answer] = await client.answersTo(id, 1);
  return answer ? plist(plist(answer.expr.slice(1)).counters).rejected : null;
}

async function main() {
  const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const keys = Object.fromEntries(Object.entries(config.keys || {}).map(
    ([id, hex]) => [id, Buffer.from(hex, 'hex')]));
  const client = await Client.connect(config.url, {
    exchange: config.exchange, queuePrefix: config.queuePrefix, keyId: config.keyId, keys });
  const [first] = config.nodes;
  const out = {};
  try {
    // ping to all: one pong per node
    const ping = await client.send('all', '(ping)');
    const pongs = await client.answersTo(ping, config.nodes.length);
    out.pong_nodes = pongs.filter((a) => head(a) === 'pong')
      .map((a) => plist(a.expr.slice(1)).node).sort();
    // status from one node
    const status = await client.send(`node.${first}`, '(status)');
    const [statusAnswer] = await client.answersTo(status, 1);
    out.status = statusAnswer && head(statusAnswer) === 'node-status'
      ? { node: plist(statusAnswer.expr.slice(1)).node } : null;
    // a role message, applied by one cell of the role, then answered
    await client.send(`role.${config.role}`, '(add 2)', { expectReply: false });
    const total = await client.send(`role.${config.role}`, '(total)');
    out.role_answers = (await client.answersTo(total, 1)).map((a) => a.text);
    // each.<role> reaches every node of the role; cell.<name> one cell
    const each = await client.send(`each.${config.role}`, '(total)');
    out.each_answers = (await client.answersTo(each, config.nodes.length)).map((a) => a.text);
    const cell = await client.send(`cell.${config.cell}`, '(total)');
    out.cell_answers = (await client.answersTo(cell, 1)).map((a) => a.text);
    // an error names the message it answers
    const bad = await client.send(`cell.${config.cell}`, '(add "two")');
    out.error_answers = (await client.answersTo(bad, 1)).map((a) => head(a));
    // every call-back so far was signed by a node key this client knows, and verified
    const all = [...client.answers.values()].flat();
    out.answers = all.length;
    out.verified = all.filter((a) => a.verified).length;
    out.refused_call_backs = client.refused.map((r) => r.reason);
    if (config.keyId !== undefined) {
      const before = await rejectedBy(client, first);
      // a wrong signature: one hex digit changed
      const forged = await client.send(`node.${first}`, '(ping)', {
        tamper: ({ headers }) => {
          const s = headers['x-cellframe-signature'];
          headers['x-cellframe-signature'] = (s[0] === '0' ? '1' : '0') + s.slice(1);
        } });
      // an expired one: signed correctly, but its life ended a minute ago
      const now = Date.now() / 1000;
      const expired = await client.send(`node.${first}`, '(ping)',
        { timestamp: now - 90, expires: now - 60 });
      out.forged_answered = (await client.answersTo(forged, 1, QUIET_MS)).length;
      out.expired_answered = (await client.answersTo(expired, 1, QUIET_MS)).length;
      out.rejected_delta = (await rejectedBy(client, first)) - before;
      // the node's unsigned (refused ...) notices, which this client cannot verify: hints only
      out.refusal_notices = client.refused.filter((r) => r.text.startsWith('(refused ')).length;
    }
  } finally {
    await client.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((error) => {
  process.stderr.write(`error: ${error.stack || error}\n`);
  process.exit(1);
});
