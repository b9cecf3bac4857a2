// Runs the civicedge payload codec over a file of vectors, for tests/sim/test_codec_js.py.
//
//   node --expose-internals codec_runner.js CODEC.js VECTORS.json   -> JSON on stdout
//
// VECTORS.json is {"vectors": [{"name", "input": {bytes, fPort, recvTime?, variables?}}]};
// a string recvTime becomes a Date, as ChirpStack and TTS pass it. The codec runs the way
// the network servers run it: as a plain script (no `module`, no `require`) in a fresh
// context, here one stripped of the ECMAScript 2015+ library (Map, Object.assign,
// Number.isInteger, String.prototype.padStart, ...), so a codec that leans on any of it
// fails here as it would in an ES5.1 engine. Output:
//   {"results": [{"name", "output"} | {"name", "threw"}],
//    "chirpstack": the first vector's output from `codec + "\n\ndecodeUplink(chirpstack_input)"`
//                  evaluated as ChirpStack v4 does (chirpstack/src/codec/js/mod.rs),
//    "via_require": {"exports": [...], "outputs": [...]}   (Node's module.exports path,
//                  the first vector with bytes as an Array, a Buffer and a Uint8Array),
//    "tables": the codec's exported constants,
//    "es5_parse": "ok" | "error: ..." | "unavailable: ...",   (acorn, ecmaVersion 5)
//    "removed": the ES2015+ names deleted from the sandbox}
"use strict";

var fs = require("fs");
var path = require("path");
var vm = require("vm");

var ES2015_PLUS = {
    "": ["Map", "Set", "WeakMap", "WeakSet", "WeakRef", "Promise", "Proxy", "Reflect", "Symbol",
         "BigInt", "ArrayBuffer", "DataView", "Int8Array", "Uint8Array", "Uint8ClampedArray",
         "Int16Array", "Uint16Array", "Int32Array", "Uint32Array", "Float32Array", "Float64Array",
         "BigInt64Array", "BigUint64Array", "globalThis", "structuredClone", "queueMicrotask"],
    "Object": ["assign", "entries", "values", "fromEntries", "is", "setPrototypeOf",
               "getOwnPropertySymbols", "getOwnPropertyDescriptors", "hasOwn"],
    "Array": ["from", "of"],
    "Array.prototype": ["find", "findIndex", "findLast", "findLastIndex", "fill", "includes",
                        "keys", "values", "entries", "copyWithin", "flat", "flatMap", "at",
                        "toSorted", "toReversed", "with"],
    "String": ["fromCodePoint", "raw"],
    "String.prototype": ["includes", "startsWith", "endsWith", "repeat", "padStart", "padEnd",
                         "codePointAt", "normalize", "trimStart", "trimEnd", "at", "replaceAll",
                         "matchAll"],
    "Number": ["isInteger", "isFinite", "isNaN", "isSafeInteger", "parseFloat", "parseInt",
               "EPSILON", "MAX_SAFE_INTEGER", "MIN_SAFE_INTEGER"],
    "Math": ["trunc", "sign", "cbrt", "log2", "log10", "log1p", "expm1", "hypot", "clz32",
             "imul", "fround", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh"]
};

// Runs inside the sandbox, after the codec: ES5 only, like the codec.
var DRIVER = [
    "function __civicedgeRun(json) {",
    "  var vs = JSON.parse(json), out = [], i, v, inp;",
    "  for (i = 0; i < vs.length; i++) {",
    "    v = vs[i];",
    "    inp = v.input;",
    "    if (inp !== null && typeof inp === 'object' && typeof inp.recvTime === 'string') {",
    "      inp.recvTime = new Date(inp.recvTime);",
    "    }",
    "    try {",
    "      out.push({name: v.name, output: decodeUplink(inp)});",
    "    } catch (e) {",
    "      out.push({name: v.name, threw: String(e && e.stack ? e.stack : e)});",
    "    }",
    "  }",
    "  return JSON.stringify(out);",
    "}"
].join("\n");

var STRIP = [
    "(function (names) {",
    "  var removed = [], owner, where, i, k, g = this;",
    "  for (where in names) {",
    "    owner = where === '' ? g : where.split('.').reduce(function (o, p) { return o[p]; }, g);",
    "    for (i = 0; i < names[where].length; i++) {",
    "      k = names[where][i];",
    "      if (Object.prototype.hasOwnProperty.call(owner, k)) {",
    "        delete owner[k];",
    "        if (!Object.prototype.hasOwnProperty.call(owner, k)) removed.push((where ? where + '.' : '') + k);",
    "      }",
    "    }",
    "  }",
    "  return JSON.stringify(removed);",
    "})"
].join("\n");

function es5Sandbox() {
    var ctx = vm.createContext({});
    var strip = vm.runInContext(STRIP, ctx);
    var removed = JSON.parse(strip.call(vm.runInContext("this", ctx), ES2015_PLUS));
    return {ctx: ctx, removed: removed};
}

function es5Parse(src) {
    var acorn = null, tried = ["internal/deps/acorn/acorn/dist/acorn", "acorn"], i;
    for (i = 0; i < tried.length && acorn === null; i++) {
        try {
            acorn = require(tried[i]);
        } catch (e) {
            acorn = null;
        }
    }
    if (acorn === null) {
        return "unavailable: no acorn (run node with --expose-internals)";
    }
    try {
        acorn.parse(src, {ecmaVersion: 5, sourceType: "script"});
        return "ok";
    } catch (e) {
        return "error: " + e.message;
    }
}

function main(argv) {
    var codecPath = path.resolve(argv[0]);
    var src = fs.readFileSync(codecPath, "utf8");
    var vectors = JSON.parse(fs.readFileSync(argv[1], "utf8")).vectors;
    var out = {es5_parse: es5Parse(src)};

    var box = es5Sandbox();
    out.removed = box.removed;
    vm.runInContext(src, box.ctx, {filename: codecPath});
    vm.runInContext(DRIVER, box.ctx, {filename: "codec_runner driver"});
    out.results = JSON.parse(box.ctx.__civicedgeRun(JSON.stringify(vectors)));

    // ChirpStack v4: the codec source, then `decodeUplink(chirpstack_input)`, evaluated as
    // one non-strict script whose completion value is the result.
    var cs = es5Sandbox();
    if (vectors.length) {
        cs.ctx.chirpstack_input = vm.runInContext("(" + JSON.stringify(vectors[0].input) + ")", cs.ctx);
        var res = vm.runInContext(src + "\n\ndecodeUplink(chirpstack_input)\n", cs.ctx);
        out.chirpstack = JSON.parse(JSON.stringify(res));
    }

    // Node's module.exports (how other tools load it), with the byte containers Node has.
    var mod = require(codecPath);
    out.via_require = {exports: Object.keys(mod).sort(), outputs: []};
    if (vectors.length && vectors[0].input && Array.isArray(vectors[0].input.bytes)) {
        var b = vectors[0].input.bytes;
        [b.slice(), Buffer.from(b), new Uint8Array(b)].forEach(function (bytes) {
            var inp = Object.assign({}, vectors[0].input, {bytes: bytes});
            out.via_require.outputs.push(JSON.parse(JSON.stringify(mod.decodeUplink(inp))));
        });
    }
    out.tables = {QUANTITIES: mod.QUANTITIES, FLAGS: mod.FLAGS, PACK_PORT: mod.PACK_PORT,
                  EPOCH_S: mod.EPOCH_S, CLOCK_AHEAD_S: mod.CLOCK_AHEAD_S};
    process.stdout.write(JSON.stringify(out));
}

main(process.argv.slice(2));
