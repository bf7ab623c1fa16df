// Usage: node scripts/strip-unused-hydration.mjs IN.wasm OUT.wasm
//
// Replaces with `unreachable` the body of every function of the two ways of hydrating that
// Leptos compiles in but the panel never uses, so that `wasm-opt` then removes all the code
// only they reach: about 85 KB of the bundle's 725 (24 KB of its 266 gzip).
//
// - Asynchronous hydration (`hydrate_async`). With `erase_components`, every view is a
//   type-erased `AnyView`, which stores a pointer to its `hydrate_async` beside its `hydrate`
//   (tachys' `view/any_view.rs`). The panel hydrates synchronously (`hydrate_body`; no
//   `Suspense`, no islands), so none of them ever runs, but a stored function pointer keeps the
//   function, the future it builds and everything they call: the linker cannot see that the
//   pointer is never called.
// - Hydration from a `<template>` (`hydrate_from_template`, kept the same way by every
//   type-erased attribute); the panel has no `ViewTemplate`.
//
// Should one run after all, it traps, the page reports an error, and the end-to-end tests
// (which fail on any page error) catch it.
//
// It reads the names from the `name` section, so it runs on the module cargo builds, before
// wasm-bindgen (which drops that section). It fails when it finds no such function (a Leptos
// upgrade renamed them), rather than silently shipping the larger bundle. The compiler merges
// identical functions under one name, so a function so named may be live code: whatever a
// function outside the set calls directly stays, and so does drop glue
// (`drop_in_place<…hydrate_async…>`), which live vtables may share; both go anyway once
// nothing reaches them.

import { readFileSync, writeFileSync } from 'node:fs';

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error('usage: node scripts/strip-unused-hydration.mjs IN.wasm OUT.wasm');
  process.exit(2);
}

// Names as the linker writes them (mangled, `_ZN…`) or as `wasm-bindgen --keep-debug` keeps them.
const UNUSED = /hydrate_async|hydrate_from_template/;
const DROP_GLUE = /^(_ZN4core3ptr\d+|core(\[[0-9a-f]+\])?::ptr::)drop_in_place/;

const bytes = readFileSync(input);

/** Reads an unsigned LEB128 number at `at`: [value, position after it]. */
function uleb(at) {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = bytes[at++];
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
    if (byte < 0x80) return [value, at];
  }
}

/** The unsigned LEB128 bytes of `value`. */
function encodeUleb(value) {
  const out = [];
  do {
    let byte = value & 0x7f;
    value = Math.floor(value / 128);
    if (value > 0) byte |= 0x80;
    out.push(byte);
  } while (value > 0);
  return Buffer.from(out);
}

/** Reads a length-prefixed UTF-8 name at `at`: [name, position after it]. */
function name(at) {
  const [length, start] = uleb(at);
  return [bytes.toString('utf8', start, start + length), start + length];
}

// The sections, in order: id, start and end of the contents.
const sections = [];
for (let at = 8; at < bytes.length; ) {
  const id = bytes[at];
  const [size, start] = uleb(at + 1);
  sections.push({ id, start, end: start + size });
  at = start + size;
}

// Imported functions come first in the function index space.
let importedFunctions = 0;
for (const { start } of sections.filter((s) => s.id === 2)) {
  let [count, at] = uleb(start);
  for (; count > 0; count--) {
    [, at] = name(at);
    [, at] = name(at);
    const kind = bytes[at++];
    if (kind === 0x00) {
      [, at] = uleb(at); // type index
      importedFunctions++;
    } else if (kind === 0x01) {
      at++; // element type
      const flags = bytes[at++];
      [, at] = uleb(at);
      if (flags & 1) [, at] = uleb(at);
    } else if (kind === 0x02) {
      const flags = bytes[at++];
      [, at] = uleb(at);
      if (flags & 1) [, at] = uleb(at);
    } else if (kind === 0x03) {
      at += 2; // value type, mutability
    } else {
      throw new Error(`import of unknown kind ${kind}`);
    }
  }
}

// Function names: the `name` custom section, subsection 1.
const names = new Map();
for (const { start, end } of sections.filter((s) => s.id === 0)) {
  let [section, at] = name(start);
  if (section !== 'name') continue;
  while (at < end) {
    const subsection = bytes[at];
    const [size, contents] = uleb(at + 1);
    if (subsection === 1) {
      let [count, p] = uleb(contents);
      for (; count > 0; count--) {
        let index;
        [index, p] = uleb(p);
        let functionName;
        [functionName, p] = name(p);
        names.set(index, functionName);
      }
    }
    at = contents + size;
  }
}
if (names.size === 0) {
  console.error(`${input} has no function names (a \`name\` section): give it the module cargo builds`);
  process.exit(1);
}

/** Reads a signed LEB128 number at `at` and returns the position after it. */
function skipSleb(at) {
  while (bytes[at++] & 0x80);
  return at;
}

/**
 * The functions that the body at `start..end` calls directly (`call`, `return_call`). Decodes
 * the instructions rustc emits for wasm32 (MVP, bulk memory, saturating conversions, sign
 * extension, reference types); fails on anything else rather than guessing.
 */
function directCalls(start, end) {
  const calls = [];
  let [groups, at] = uleb(start);
  for (; groups > 0; groups--) {
    [, at] = uleb(at); // count
    at++; // value type
  }
  while (at < end) {
    const op = bytes[at++];
    if (op === 0x10 || op === 0x12) {
      let callee;
      [callee, at] = uleb(at);
      calls.push(callee);
    } else if (op === 0x02 || op === 0x03 || op === 0x04) {
      const type = bytes[at];
      at = type === 0x40 || (type >= 0x6f && type <= 0x7f) ? at + 1 : skipSleb(at);
    } else if (op === 0x0c || op === 0x0d || (op >= 0x20 && op <= 0x26) || op === 0xd2) {
      [, at] = uleb(at);
    } else if (op === 0x0e) {
      let [targets, p] = uleb(at);
      for (; targets >= 0; targets--) [, p] = uleb(p);
      at = p;
    } else if (op === 0x11 || op === 0x13) {
      [, at] = uleb(at);
      [, at] = uleb(at);
    } else if (op === 0x1c) {
      let [types, p] = uleb(at);
      at = p + types;
    } else if (op >= 0x28 && op <= 0x3e) {
      [, at] = uleb(at); // alignment
      [, at] = uleb(at); // offset
    } else if (op === 0x3f || op === 0x40 || op === 0xd0) {
      at++;
    } else if (op === 0x41 || op === 0x42) {
      at = skipSleb(at);
    } else if (op === 0x43) {
      at += 4;
    } else if (op === 0x44) {
      at += 8;
    } else if (op === 0xfc) {
      let sub;
      [sub, at] = uleb(at);
      if (sub <= 7) continue;
      if (sub === 8) [, at] = uleb(at), at++;
      else if (sub === 10) at += 2;
      else if (sub === 11) at++;
      else if (sub === 12 || sub === 14) [, at] = uleb(at), [, at] = uleb(at);
      else if (sub === 9 || sub === 13 || (sub >= 15 && sub <= 17)) [, at] = uleb(at);
      else throw new Error(`unknown instruction 0xfc ${sub}`);
    } else if (
      op > 0xd2 ||
      (op > 0x1c && op < 0x20) ||
      (op > 0x13 && op < 0x1a) ||
      (op > 0x0b && op < 0x0c) ||
      (op > 0x04 && op < 0x0b && op !== 0x05)
    ) {
      throw new Error(`unknown instruction 0x${op.toString(16)}`);
    }
  }
  return calls;
}

// The functions' bodies, and which of them match.
const code = sections.find((s) => s.id === 10);
const bodies = [];
{
  let [count, at] = uleb(code.start);
  for (let i = 0; i < count; i++) {
    const [size, body] = uleb(at);
    at = body + size;
    const functionName = names.get(importedFunctions + i) ?? '';
    bodies.push({
      start: body,
      end: at,
      unused: UNUSED.test(functionName) && !DROP_GLUE.test(functionName),
    });
  }
}
// The compiler merges identical functions and the name section keeps one of their names, so a
// function named for asynchronous hydration may be the very code that synchronous hydration
// calls (seen: `HtmlElement::hydrate` calling `hydrate_async::{{closure}}::inner_1`). Whatever
// a function outside the set calls directly is live: taken out of the set, until nothing
// changes.
for (let changed = true; changed; ) {
  changed = false;
  for (const body of bodies) {
    if (body.unused) continue;
    for (const callee of directCalls(body.start, body.end)) {
      const target = bodies[callee - importedFunctions];
      if (target?.unused) {
        target.unused = false;
        changed = true;
      }
    }
  }
}

// The body of a function that traps: no locals, `unreachable`, `end`.
const TRAP = Buffer.from([0x00, 0x00, 0x0b]);
const parts = [bytes.subarray(0, 8)];
let stripped = 0;
for (const { id, start, end } of sections) {
  let contents = bytes.subarray(start, end);
  if (id === 10) {
    const out = [encodeUleb(bodies.length)];
    for (const body of bodies) {
      if (body.unused) {
        out.push(encodeUleb(TRAP.length), TRAP);
        stripped++;
      } else {
        out.push(encodeUleb(body.end - body.start), bytes.subarray(body.start, body.end));
      }
    }
    contents = Buffer.concat(out);
  }
  parts.push(Buffer.from([id]), encodeUleb(contents.length), contents);
}
if (stripped === 0) {
  console.error('no unused hydration function found: did a Leptos upgrade rename them?');
  process.exit(1);
}
writeFileSync(output, Buffer.concat(parts));
console.log(`stripped ${stripped} unused hydration functions`);
