'use strict';
// A cellframe client for Node.js, written from docs/protocol.md (section numbers below).
const crypto = require('crypto');
const amqp = require('amqplib');
const { read } = require('./sexp');

const CONTENT_TYPE = 'application/vnd.cellframe.sexp';
const SIGNATURE = 'x-cellframe-signature';
const KEY = 'x-cellframe-key';
const TARGET = 'x-cellframe-target';
const EXPIRES = 'x-cellframe-expires';
const TS = 'x-cf-ts';
const FLOAT = 'x-cf-float';
const VERSION = Buffer.from('cellframe-sig-v2');

// Section 6: the bytes the HMAC covers. Each field: 1 byte present (1) or absent (0), an
// 8-byte big-endian length, then the value (UTF-8 text, a big-endian double, or raw bytes).
function field(value) {
  if (value === null || value === undefined) return Buffer.alloc(9);
  const bytes = typeof value === 'number' ? double(value)
    : Buffer.isBuffer(value) ? value : Buffer.from(value, 'utf8');
  const head = Buffer.alloc(9);
  head.writeUInt8(1, 0);
  head.writeBigUInt64BE(BigInt(bytes.length), 1);
  return Buffer.concat([head, bytes]);
}

function double(x) {
  const b = Buffer.alloc(8);
  b.writeDoubleBE(x, 0);
  return b;
}

function canonicalBytes(m) {
  return Buffer.concat([VERSION, ...[m.exchange, m.target, m.messageId, m.keyId, m.timestamp,
    m.expires, m.replyTo, m.sender, m.correlationId, m.body].map(field)]);
}

function signature(secret, m) {
  return crypto.createHmac('sha256', secret).update(canonicalBytes(m)).digest('hex');
}

// A header value as cellframe sent it: a float travels as {x-cf-float: "<decimal>"} (section 3).
function headerFloat(value) {
  if (value && typeof value === 'object' && FLOAT in value) return Number(String(value[FLOAT]));
  return typeof value === 'number' ? value : undefined;
}

function headerText(value) {
  if (value === undefined || value === null) return undefined;
  return Buffer.isBuffer(value) ? value.toString('utf8') : String(value);
}

class Client {
  // options: exchange, name, keyId (the key it signs with; none: unsigned), keys (the secrets
  // it knows, by key id, as Buffers: its own, and the node keys whose call-backs it verifies),
  // queuePrefix, ttl (seconds a signed message lives).
  static async connect(url, options = {}) {
    const client = new Client(options);
    await client.open(url);
    return client;
  }

  constructor({ exchange = 'cellframe.control', name, keyId, keys = {}, queuePrefix = '',
    ttl = 30 } = {}) {
    this.exchange = exchange;
    this.deadLetters = `${exchange}.dead-letter`;
    if (exchange === 'cellframe.control') this.deadLetters = 'cellframe.dead-letter';
    this.name = name || `node-client-${crypto.randomBytes(6).toString('hex')}`;
    this.replyTo = `reply.${this.name}`;
    this.queue = queuePrefix + this.replyTo;
    this.keyId = keyId;
    this.keys = keys;
    this.secret = keyId === undefined ? undefined : keys[keyId];
    if (keyId !== undefined && !this.secret) throw new Error(`no secret for key ${keyId}`);
    this.ttl = ttl;
    this.answers = new Map(); // correlation id -> [answer]
    this.waiters = [];
    this.returned = new Map(); // message id -> reply text of basic.return
    this.refused = []; // call-backs refused (bad signature, foreign type)
  }

  async open(url) {
    this.connection = await amqp.connect(url);
    this.channel = await this.connection.createConfirmChannel();
    const ch = this.channel;
    // Section 1: the same declarations as every node and client.
    await ch.assertExchange(this.exchange, 'topic', { durable: true });
    await ch.assertExchange(this.deadLetters, 'fanout', { durable: true });
    await ch.assertQueue(this.deadLetters, { durable: true });
    await ch.bindQueue(this.deadLetters, this.deadLetters, '#');
    await ch.assertQueue(this.queue, {
      exclusive: true, arguments: { 'x-dead-letter-exchange': this.deadLetters } });
    await ch.bindQueue(this.queue, this.exchange, this.replyTo);
    ch.on('return', (msg) => this.returned.set(msg.properties.messageId, msg.fields.replyText));
    await ch.consume(this.queue, (msg) => this.onDelivery(msg), { noAck: false });
  }

  // Section 3: publish `text` to routing key `target`; resolves to the message id once the
  // broker confirmed it. options: expectReply (default true), expires (seconds since the
  // epoch), tamper (a function applied to the signed message: for tests of refusals).
  async send(target, text, { expectReply = true, expires, timestamp, tamper } = {}) {
    const now = timestamp ?? Date.now() / 1000;
    const m = {
      exchange: this.exchange, target, messageId: crypto.randomUUID(), keyId: this.keyId,
      timestamp: now, expires: this.secret ? (expires ?? now + this.ttl) : undefined,
      replyTo: expectReply ? this.replyTo : undefined, sender: this.name,
      correlationId: undefined, body: Buffer.from(text, 'utf8'),
    };
    const headers = { [TS]: String(m.timestamp) };
    if (this.secret) {
      Object.assign(headers, {
        [KEY]: m.keyId, [TARGET]: target, [EXPIRES]: { [FLOAT]: String(m.expires) },
        [SIGNATURE]: signature(this.secret, m),
      });
    }
    const message = { m, headers };
    if (tamper) tamper(message);
    this.channel.publish(this.exchange, target, message.m.body, {
      messageId: m.messageId, timestamp: Math.floor(m.timestamp), replyTo: m.replyTo,
      appId: m.sender, contentType: CONTENT_TYPE, headers: message.headers,
      deliveryMode: target.startsWith('role.') ? 2 : 1, mandatory: true,
    });
    await this.channel.waitForConfirms();
    return m.messageId;
  }

  // Section 5: a call-back, verified (signed clusters) and filed under its correlation id.
  onDelivery(msg) {
    this.channel.ack(msg);
    const p = msg.properties;
    const h = p.headers || {};
    const answer = {
      messageId: headerText(h['x-cf-id']) ?? p.messageId,
      correlationId: headerText(h['x-cf-correlation-id']) ?? p.correlationId,
      sender: headerText(h['x-cf-sender']) ?? p.appId,
      text: msg.content.toString('utf8'),
    };
    try {
      if (p.contentType && p.contentType.split(';')[0].trim().toLowerCase() !== CONTENT_TYPE) {
        throw new Error(`foreign content type ${p.contentType}`);
      }
      if (this.keyId !== undefined) this.verify(msg, answer);
      answer.expr = read(answer.text);
    } catch (error) {
      this.refused.push({ ...answer, reason: error.message });
      this.wake();
      return;
    }
    const list = this.answers.get(answer.correlationId) || [];
    if (!list.some((a) => a.messageId === answer.messageId)) list.push(answer); // at least once
    this.answers.set(answer.correlationId, list);
    this.wake();
  }

  verify(msg, answer) {
    const p = msg.properties;
    const h = p.headers || {};
    const given = headerText(h[SIGNATURE]);
    if (!given || !/^[0-9a-f]{64}$/.test(given)) throw new Error('unsigned call-back');
    const secret = this.keys[headerText(h[KEY])];
    if (!secret) throw new Error(`call-back signed by unknown key ${headerText(h[KEY])}`);
    const m = {
      exchange: this.exchange, target: msg.fields.routingKey, messageId: answer.messageId,
      keyId: headerText(h[KEY]), timestamp: Number(headerText(h[TS])),
      expires: headerFloat(h[EXPIRES]), replyTo: headerText(h['x-cf-reply-to']) ?? p.replyTo,
      sender: answer.sender, correlationId: answer.correlationId, body: msg.content,
    };
    const expected = signature(secret, m);
    if (!crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(given))) {
      throw new Error('call-back signature does not match');
    }
    if (headerText(h[TARGET]) !== m.target) throw new Error('call-back signed for another target');
    if (!(m.expires > Date.now() / 1000)) throw new Error('call-back expired');
    answer.verified = true;
  }

  wake() {
    for (const wake of this.waiters.splice(0)) wake();
  }

  // Wait until `count` answers to `messageId` arrived, or `ms` passed; resolve to them.
  async answersTo(messageId, count = 1, ms = 10000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const have = this.answers.get(messageId) || [];
      const left = deadline - Date.now();
      if (have.length >= count || left <= 0) return have;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  async close() {
    await this.connection.close();
  }
}

module.exports = { Client, canonicalBytes, signature, CONTENT_TYPE };
