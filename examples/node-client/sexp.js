'use strict';
// Cellframe text (docs/protocol.md, section 4): read call-backs, write expressions.
// Data: arrays are lists, Sym and Kw wrap names, strings, numbers (BigInt past 2^53),
// true, false and null (nil). 'x reads as (quote x).

class Sym { constructor(name) { this.name = name; } toString() { return this.name; } }
class Kw { constructor(name) { this.name = name; } toString() { return ':' + this.name; } }

const DELIMITED = String.raw`(?![^\s()'";])`;
const INT = new RegExp(String.raw`^[-+]?[0-9]+` + DELIMITED);
const FLOAT = new RegExp(String.raw`^[-+]?(?:[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)` + DELIMITED);
const CONSTANT = new RegExp(String.raw`^(true|false|nil)` + DELIMITED);
const SYMBOL = /^(?![-+]?\.?[0-9])(?:[^\W\d]|[!$%&*+\-./<=>?@^_~|])[\w!$%&*+\-./<=>?@^~|:#]*/u;
const KEYWORD = /^:[\w!$%&*+\-./<=>?@^~|:#]+/u;
const STRING = /^"[^"\\]*(?:\\.[^"\\]*)*"/s;
const ESCAPES = { '"': '"', '\\': '\\', n: '\n', t: '\t', r: '\r' };

function read(text) {
  let at = 0;
  const skip = () => {
    for (;;) {
      const rest = text.slice(at);
      const space = /^(?:\s+|;[^\n]*)/.exec(rest);
      if (!space) return;
      at += space[0].length;
    }
  };
  const fail = (why) => { throw new SyntaxError(`${why} at offset ${at}`); };
  const datum = () => {
    skip();
    if (at >= text.length) fail('unexpected end of input');
    const c = text[at];
    if (c === '(') {
      at += 1;
      const items = [];
      for (;;) {
        skip();
        if (text[at] === ')') { at += 1; return items; }
        items.push(datum());
      }
    }
    if (c === ')') fail('unexpected )');
    if (c === "'") { at += 1; return [new Sym('quote'), datum()]; }
    const rest = text.slice(at);
    let m;
    if ((m = CONSTANT.exec(rest))) { at += m[0].length; return { true: true, false: false, nil: null }[m[1]]; }
    if ((m = INT.exec(rest))) {
      at += m[0].length;
      const big = BigInt(m[0]);
      return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
    }
    if ((m = FLOAT.exec(rest))) { at += m[0].length; return Number(m[0]); }
    if ((m = STRING.exec(rest))) { at += m[0].length; return unescape(m[0].slice(1, -1)); }
    if ((m = KEYWORD.exec(rest))) { at += m[0].length; return new Kw(m[0].slice(1)); }
    if ((m = SYMBOL.exec(rest))) { at += m[0].length; return new Sym(m[0]); }
    return fail(`cannot read ${JSON.stringify(rest.slice(0, 20))}`);
  };
  const value = datum();
  skip();
  if (at !== text.length) fail('more than one expression');
  return value;
}

function unescape(body) {
  return body.replace(/\\(u[0-9a-fA-F]{4}|.)/gs, (_, e) => {
    if (e.length === 5) return String.fromCharCode(parseInt(e.slice(1), 16));
    if (!(e in ESCAPES)) throw new SyntaxError(`unknown escape \\${e}`);
    return ESCAPES[e];
  });
}

// Canonical text (docs/protocol.md, section 4).
function write(value) {
  if (Array.isArray(value)) return '(' + value.map(write).join(' ') + ')';
  if (value instanceof Sym) return value.name;
  if (value instanceof Kw) return ':' + value.name;
  if (value === null || value === undefined) return 'nil';
  if (value === true) return 'true';
  if (value === false) return 'false';
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RangeError('NaN and infinities cannot be written');
    return value.toString();
  }
  if (typeof value === 'string') {
    return '"' + value.replace(/["\\\x00-\x1f\x7f-\x9f\u2028\u2029]/g, (c) => (
      { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\t': '\\t', '\r': '\\r' }[c]
      || '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'))) + '"';
  }
  throw new TypeError(`cannot write ${typeof value}`);
}

// A keyword property list (:key value ...) as an object; nested plists stay as read.
function plist(items) {
  const out = {};
  for (let i = 0; i + 1 < items.length; i += 2) {
    if (items[i] instanceof Kw) out[items[i].name] = items[i + 1];
  }
  return out;
}

module.exports = { Sym, Kw, read, write, plist };
