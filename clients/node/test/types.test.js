// index.d.ts is written by hand (no TypeScript compiler here): these tests
// keep it in step with index.js. They read its declarations as text and
// check that every export of index.js is declared (and nothing it lacks),
// that each class declares the methods, getters and fields its instances
// have, the functions their number of required parameters, and that the
// error codes of ERROR_CLASSES are those of ErrorCode.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import * as liminald from 'liminald';
import { packageDir } from './helpers.js';

const dts = fs.readFileSync(path.join(packageDir, 'index.d.ts'), 'utf8');
const pkg = JSON.parse(fs.readFileSync(path.join(packageDir, 'package.json'), 'utf8'));

/** The text of the declarations, without comments. */
const source = dts.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');

/** The body of the block opening at index open (a "{"), without its braces. */
function block(text, open) {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return text.slice(open + 1, i);
  }
  throw new Error(`unbalanced braces from ${open}`);
}

/** The declared classes: name -> { base, methods, getters, fields }. */
function declaredClasses() {
  const classes = new Map();
  const re = /export declare class (\w+)(?:\s+extends\s+(\w+))?(?:\s+implements\s+[^{]+)?\s*\{/g;
  for (let m = re.exec(source); m !== null; m = re.exec(source)) {
    const body = block(source, m.index + m[0].length - 1);
    const members = { base: m[2] ?? null, methods: new Set(), getters: new Set(), fields: new Set() };
    // One member per line at the body's top level (object types nested in
    // a signature are on the same line or indented deeper).
    for (const line of body.split('\n')) {
      if (!/^ {2}\S/.test(line)) continue;
      const mm = /^ {2}(?:private |static )?(readonly |get )?(\[[\w.]+\]|\w+)(\??)\s*([(:<])/.exec(line);
      if (mm === null) continue;
      const [, kind, name, , after] = mm;
      if (name === 'constructor') continue;
      if (kind === 'get ') members.getters.add(name);
      else if (after === ':') members.fields.add(name);
      else members.methods.add(name);
    }
    classes.set(m[1], members);
  }
  return classes;
}

const classes = declaredClasses();

/** The declared values: classes, functions and constants. */
function declaredValues() {
  const names = new Set();
  for (const m of source.matchAll(/export declare (?:class|function|const) (\w+)/g)) names.add(m[1]);
  return names;
}

test('index.d.ts declares every export of index.js, and nothing it lacks', () => {
  // Its brackets balance (the least a compiler would ask).
  for (const [open, close] of [['{', '}'], ['(', ')'], ['[', ']']]) {
    assert.equal(source.split(open).length, source.split(close).length, `${open}${close} balance`);
  }
  const exported = Object.keys(liminald).sort();
  const declared = [...declaredValues()].sort();
  assert.deepEqual(declared, exported);
  // What kind each is.
  for (const m of source.matchAll(/export declare (class|function|const) (\w+)/g)) {
    const value = liminald[m[2]];
    if (m[1] === 'const') assert.notEqual(typeof value, 'function', m[2]);
    else assert.equal(typeof value, 'function', m[2]);
  }
  // The types it declares beside them do not shadow a value.
  for (const m of source.matchAll(/export (?:type|interface) (\w+)/g)) assert.equal(liminald[m[1]], undefined, m[1]);
});

test('package.json points at index.js and index.d.ts, and ships both', () => {
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.types, './index.d.ts');
  assert.deepEqual(pkg.exports['.'], { types: './index.d.ts', default: './index.js' });
  for (const f of ['index.js', 'index.d.ts']) assert.ok(pkg.files.includes(f), f);
  assert.equal(pkg.dependencies, undefined, 'no dependencies');
});

/** The parameters of a signature, split at its top-level commas. */
function params(list) {
  const out = [];
  let depth = 0;
  let cur = '';
  for (const ch of list) {
    if ('<({['.includes(ch)) depth++;
    else if ('>)}]'.includes(ch)) depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

test('each function declares as many required parameters as it has', () => {
  for (const m of source.matchAll(/export declare function (\w+)\((.*)\):/g)) {
    const required = params(m[2]).filter((p) => !/^\w+\?:/.test(p)).length;
    assert.equal(required, liminald[m[1]].length, m[1]);
  }
});

test('ErrorCode lists the codes of ERROR_CLASSES, each with the class of its name', () => {
  const union = /export type ErrorCode =([^;]+);/.exec(source)[1];
  const codes = [...union.matchAll(/'(\w+)'/g)].map((m) => m[1]).sort();
  assert.deepEqual(codes, Object.keys(liminald.ERROR_CLASSES).sort());
  for (const [code, Class] of Object.entries(liminald.ERROR_CLASSES)) {
    assert.ok(classes.has(Class.name), `${code}: ${Class.name} is declared`);
  }
});

// An instance of each class, made without a daemon, to read its fields.
function instances() {
  const client = new liminald.Client({ socketPath: '/nonexistent/liminald.sock' });
  const lease = new liminald.Lease(client, 'c', 'm', { worker: 'w', leaseMs: 1000, token: 1, expiresAt: 2, renewEveryMs: 0 });
  const conn = { subs: new Map() };
  const made = {
    Client: client,
    Lease: lease,
    Subscription: new liminald.Subscription(client, conn, 1, 'c', 10),
    LiminaldError: new liminald.LiminaldError('x', 'm'),
    OutputTooLargeError: new liminald.OutputTooLargeError(2, 1, '/s'),
    ProtocolError: new liminald.ProtocolError('start with worker', 2, 1, '/s'),
    TimeoutError: new liminald.TimeoutError('ping', 1, false, '/s'),
    ConnectionClosedError: new liminald.ConnectionClosedError(),
    LaggedError: new liminald.LaggedError(1, 2, 3),
    LeaseExpiredError: new liminald.LeaseExpiredError(lease),
  };
  for (const [code, Class] of Object.entries(liminald.ERROR_CLASSES)) made[Class.name] ??= new Class(code, 'm');
  return made;
}

/** The members a declared class has with those of the declared classes it extends. */
function inherited(name) {
  const all = { methods: new Set(), getters: new Set(), fields: new Set(['name', 'message', 'stack', 'cause']) };
  for (let c = classes.get(name); c; c = classes.get(c.base)) {
    for (const k of ['methods', 'getters', 'fields']) for (const n of c[k]) all[k].add(n);
  }
  return all;
}

test('each class declares its methods, getters and fields', () => {
  const made = instances();
  for (const [name, declared] of classes) {
    const Class = liminald[name];
    const proto = Class.prototype;
    // The methods and getters on its prototype are declared in its body,
    // and those declared are there (or inherited).
    const own = Object.getOwnPropertyNames(proto).filter((n) => n !== 'constructor');
    const ownSymbols = Object.getOwnPropertySymbols(proto).filter((s) => s.description?.startsWith('Symbol.'))
      .map((s) => `[${s.description}]`);
    for (const n of [...own, ...ownSymbols]) {
      const d = Object.getOwnPropertyDescriptor(proto, n) ?? {};
      const kind = d.get ? 'getters' : 'methods';
      assert.ok(declared[kind].has(n), `${name}.${n} (a ${kind.slice(0, -1)}) is not declared`);
    }
    for (const n of declared.methods) {
      const key = n.startsWith('[Symbol.') ? Symbol[n.slice(8, -1)] : n;
      assert.equal(typeof proto[key], 'function', `${name}.${n} is declared but index.js has no such method`);
    }
    for (const n of declared.getters) {
      let found = false;
      for (let p = proto; p && !found; p = Object.getPrototypeOf(p)) found = Object.getOwnPropertyDescriptor(p, n)?.get !== undefined;
      assert.ok(found, `${name}.${n} is declared as a getter but index.js has none`);
    }
    // Its instance's own fields are declared, here or in a declared base,
    // and those it declares are there.
    const instance = made[name];
    assert.ok(instance instanceof Class, `an instance of ${name}`);
    const fields = inherited(name).fields;
    for (const k of Object.keys(instance)) assert.ok(fields.has(k), `${name}: the field ${k} is not declared`);
    for (const k of declared.fields) assert.ok(Object.hasOwn(instance, k), `${name}: the field ${k} is declared but instances have none`);
  }
  made.Lease.stop();
});
