"""The ChirpStack/TTS payload codec (protocol/js/civicedge_codec.js) under Node.js against the
Python reference decoder: every vector of simulators/codec_vectors.py (packs of every profile
from the Python encoder, hand-made edges, malformed payloads) and a Hypothesis batch decode
identically; malformed input gives errors, never a throw; the codec is ES5 and under 40 KB.

Node runs each batch once (tests/sim/codec_runner.js), in a context stripped of the
ECMAScript 2015+ library, the way ChirpStack and TTS evaluate a codec (a plain script).
Node.js is required: scripts/setup installs it.
"""

import json
import pathlib
import re
import shutil
import subprocess

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from protocol import lorapack, quantities, quality
from protocol.lorapack import pack
from simulators import codec_vectors as cv
from simulators import daysim

ROOT = pathlib.Path(__file__).resolve().parents[2]
CODEC = ROOT / "protocol" / "js" / "civicedge_codec.js"
RUNNER = pathlib.Path(__file__).with_name("codec_runner.js")
U32 = 0xFFFFFFFF


def run_node(vectors, tmp_path, name="vectors.json"):
    """The runner's JSON for ``vectors`` (one node process)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (Node.js) is not on PATH: the payload codec is tested under Node.js; "
                    "run scripts/setup (as root it installs the nodejs package) or "
                    "apt-get install nodejs")
    path = tmp_path / name
    path.write_text(json.dumps({"vectors": vectors}))
    proc = subprocess.run([node, "--expose-internals", str(RUNNER), str(CODEC), str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, "codec_runner.js failed:\n" + proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert [r["name"] for r in out["results"]] == [v["name"] for v in vectors]
    return out


def disagreements(vectors, results):
    """Per vector where the JS codec and the Python decoder differ: a readable line."""
    bad = []
    for v, r in zip(vectors, results):
        where = "%s [%s]" % (v["name"], bytes(v["input"]["bytes"]).hex())
        if "threw" in r:
            bad.append("%s: decodeUplink threw %s" % (where, r["threw"][:300]))
            continue
        out, want = r["output"], v["expect"]
        if "error" in want:
            errors = out.get("errors")
            if "data" in out or not isinstance(errors, list) or len(errors) != 1:
                bad.append("%s: Python says %r, JS returned %s" % (where, want["error"], json.dumps(out)[:300]))
            elif want["error"] not in errors[0] or "internal error" in errors[0]:
                bad.append("%s: Python says %r, JS says %r" % (where, want["error"], errors[0]))
        elif out != {"data": want["data"], "warnings": want["warnings"], "errors": []}:
            bad.append("%s:\n  JS     %s\n  Python %s" % (where, json.dumps(out)[:600],
                                                        json.dumps(want)[:600]))
    return bad


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    vectors = cv.all_vectors()
    return vectors, run_node(vectors, tmp_path_factory.mktemp("codec"))


def test_every_valid_vector_decodes_exactly_as_the_python_decoder(fixed):
    vectors, out = fixed
    valid = [(v, r) for v, r in zip(vectors, out["results"]) if "data" in v["expect"]]
    assert len(valid) >= 150
    bad = disagreements([v for v, _ in valid], [r for _, r in valid])
    assert not bad, "%d of %d valid vectors differ:\n%s" % (len(bad), len(valid), "\n".join(bad[:5]))


def test_every_malformed_vector_gives_errors_naming_what_and_where_never_a_throw(fixed):
    vectors, out = fixed
    bad_vectors = [(v, r) for v, r in zip(vectors, out["results"]) if "error" in v["expect"]]
    assert len(bad_vectors) >= 150
    problems = disagreements([v for v, _ in bad_vectors], [r for _, r in bad_vectors])
    assert not problems, "\n".join(problems[:5])
    for v, r in bad_vectors:
        msg = r["output"]["errors"][0]
        assert msg.startswith("civicedge pack: ")
        assert re.search(r"\((header|record \d+ of \d+|after the \d+ records), at byte \d+ of \d+\)$", msg), msg
    # every hand-made fault really is one, by the Python decoder's word
    assert all("error" in v["expect"] for v in vectors if v["name"].startswith("bad: "))
    msgs = {r["output"]["errors"][0] for _, r in bad_vectors}
    for what in ("truncated", "varint longer than 5 bytes", "unknown pack version", "trailing bytes",
                 "bad header", "unknown quantity code", "unknown flag", "padding nibble",
                 "gap field out of range", "drifts out of range", "seq or time out of range",
                 "bad text length", "non-printable", "values in one record", "unknown record kind",
                 "run of", "time delta without"):
        assert any(what in m for m in msgs), what
    empty = [r for v, r in bad_vectors if v["name"] == "bad: empty"][0]
    assert empty["output"] == {"errors": ["civicedge pack: truncated at byte 0 (header, at byte 0 of 0)"],
                               "warnings": []}


def test_the_vectors_cover_every_profile_quantity_flag_kind_and_edge(fixed):
    vectors, out = fixed
    records = [(v["expect"]["data"]["boot_epoch"], rec) for v in vectors if "data" in v["expect"]
               for rec in v["expect"]["data"]["records"]]
    values = [val for _, rec in records for val in rec.get("values", ())]
    assert {val["quantity"] for val in values} == {row[1] for row in quantities.QUANTITIES}
    assert {val["flag"] for val in values} == set(quality.FLAGS)
    assert {rec["kind"] for _, rec in records} == {"reading", "status", "gap"}
    assert any("value" not in val for val in values)                     # a failed read
    assert any("t" not in rec for _, rec in records)                     # clock not set
    assert any(rec["kind"] == "gap" and rec["first_epoch"] != e for e, rec in records)
    assert any(rec.get("counters", {}).get("__proto__") == 1 for _, rec in records)
    assert max(len(v["expect"]["data"]["records"]) for v in vectors if "data" in v["expect"]) == 255
    assert max(abs(val.get("value", 0)) for val in values if val["quantity"] == "co2_ppm") == 2 ** 31 - 1
    assert set(cv.PROFILES) == set(daysim.PROFILES)
    for profile in cv.PROFILES:
        for limit in cv.LIMITS:
            ups = [v for v in vectors if v["name"].startswith("%s %dB " % (profile, limit))]
            assert ups and all(len(v["input"]["bytes"]) <= limit for v in ups)
    names = " ".join(v["name"] for v in vectors)
    for kind in ("cut to", "varint", "version", "trailing", "empty", "random", "damaged"):
        assert kind in names
    assert any(v["expect"].get("warnings") for v in vectors)            # a clock-ahead warning
    # the documented examples (docs/protocol-lorawan.md "Example" and "Gap records")
    by_name = {v["name"]: bytes(v["input"]["bytes"]).hex() for v in vectors}
    assert by_name["golden example"] == ("010c9003780512" "80e29d3c03010203c809802bb806"
                                         "810c02020e0000082000f6130202" "09020000d7130300")
    assert by_name["golden gap across epochs"] == "01be010000025280e29d3c78f5023b0001100206077adc0b"


def test_the_codec_runs_as_chirpstack_evaluates_it_and_loads_in_node(fixed):
    vectors, out = fixed
    first = out["results"][0]["output"]
    assert "data" in vectors[0]["expect"] and first["errors"] == []
    assert out["chirpstack"] == first
    assert "decodeUplink" in out["via_require"]["exports"]
    assert out["via_require"]["outputs"] == [first, first, first]  # Array, Buffer, Uint8Array


def test_the_codec_tables_are_the_python_tables(fixed):
    _, out = fixed
    tables = out["tables"]
    want = {}
    for code, name, _senml, unit, kind in quantities.QUANTITIES:
        denom = lorapack.RESOLUTION.get(name)
        assert (denom is None) == (kind == quantities.TEXT)
        want[str(code)] = [name, unit, denom or 0]
    assert tables["QUANTITIES"] == want
    assert tables["FLAGS"] == [quantities.FLAG_BY_CODE[i] for i in range(len(quantities.FLAG_CODES))]
    assert tables["EPOCH_S"] == lorapack.EPOCH_S
    assert tables["PACK_PORT"] == cv.FPORT
    assert tables["CLOCK_AHEAD_S"] == cv.CLOCK_AHEAD_S


# ---- ES5 -----------------------------------------------------------------------------------

_STRIP = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
_ES2015 = [
    ("arrow function", r"=>"), ("let", r"\blet\b"), ("const", r"\bconst\b"), ("class", r"\bclass\b"),
    ("template string", r"`"), ("spread/rest", r"\.\.\."), ("for...of", r"for\s*\([^;)]*\bof\b"),
    ("generator", r"function\s*\*|\byield\b"), ("async/await", r"\basync\b|\bawait\b"),
    ("module syntax", r"^\s*(import|export)\b"), ("exponent operator", r"\*\*"),
    ("destructuring", r"\bvar\s*[\[{]"), ("default parameter", r"function\s*\w*\s*\([^)]*="),
    ("ES2015+ library", r"\b(Symbol|Map|Set|WeakMap|Promise|Proxy|Reflect)\b|Object\.assign|"
                        r"Number\.is|Array\.from|\.includes\(|\.padStart\(|\.startsWith\("),
]


def es2015_syntax(src):
    """Names of ES2015+ constructs in JavaScript ``src`` (comments and strings ignored)."""
    code = _STRIP.sub(" ", src)
    return [name for name, rx in _ES2015 if re.search(rx, code, re.M)]


def test_the_es5_check_finds_what_it_looks_for():
    for snippet, name in (("var f = (a) => a;", "arrow function"), ("let x = 1;", "let"),
                          ("const X = 1;", "const"), ("class A {}", "class"), ("var s = `a${b}`;", "template string"),
                          ("f(...args);", "spread/rest"), ("for (var x of xs) {}", "for...of"),
                          ("var {a} = o;", "destructuring"), ("function f(a = 1) {}", "default parameter"),
                          ("x = Number.isInteger(y);", "ES2015+ library"), ("y = 2 ** 3;", "exponent operator")):
        assert name in es2015_syntax(snippet), snippet
    assert es2015_syntax('var a = "let x => `y`"; // const class\n/* let */ var b = \'...\';') == []


def test_the_codec_is_es5_and_under_40_kb(fixed):
    _, out = fixed
    src = CODEC.read_text()
    assert CODEC.stat().st_size < 40000  # TTS refuses formatters over 40,960 bytes
    assert es2015_syntax(src) == []
    assert src.isascii()
    # a real ES5 parser where Node has one (acorn, ecmaVersion 5); the regex check above otherwise
    assert out["es5_parse"] == "ok" or out["es5_parse"].startswith("unavailable"), out["es5_parse"]
    # the vectors decoded in a context without the ES2015+ library
    for name in ("Map", "Symbol", "Object.assign", "Number.isInteger", "Array.from",
                 "Array.prototype.includes", "String.prototype.padStart", "Math.trunc", "Uint8Array"):
        assert name in out["removed"]


# ---- input that is not a pack ------------------------------------------------------------------

def test_input_that_is_not_a_pack_gives_errors_not_throws(tmp_path):
    golden = list(pack(cv.GOLDEN_RECORDS, 51, 12)[0])
    cases = [  # (name, input, substring of the error or None for a decode)
        ("null input", None, "input must be an object"),
        ("no bytes", {"fPort": 2}, "input.bytes must be an array"),
        ("bytes as base64", {"bytes": "AQID", "fPort": 2}, "input.bytes must be an array"),
        ("byte 256", {"bytes": [1, 256], "fPort": 2}, "input.bytes[1] must be an integer 0..255, got 256"),
        ("byte -1", {"bytes": [-1], "fPort": 2}, "input.bytes[0] must be an integer 0..255"),
        ("byte 1.5", {"bytes": [1, 0, 1.5], "fPort": 2}, "input.bytes[2] must be an integer 0..255"),
        ("byte as text", {"bytes": ["1"], "fPort": 2}, "input.bytes[0] must be an integer 0..255"),
        ("downlink port", {"bytes": golden, "fPort": 10}, "FPort 10 carries no civicedge pack"),
        ("port from a device variable", {"bytes": golden, "fPort": 7,
                                         "variables": {"civicedge_fport": "7"}}, None),
        ("port 2 when the variable says 7", {"bytes": golden, "fPort": 2,
                                             "variables": {"civicedge_fport": "7"}}, "FPort 2 carries"),
        ("bad port variable", {"bytes": golden, "fPort": 2, "variables": {"civicedge_fport": "two"}},
         "civicedge_fport must be an FPort 1..223"),
        ("other variables", {"bytes": golden, "fPort": 2, "variables": {"site": "sch1"}}, None),
        ("recvTime not a time", {"bytes": golden, "fPort": 2, "recvTime": "yesterday"}, None),
    ]
    vectors = [{"name": n, "input": inp} for n, inp, _ in cases]
    results = run_node(vectors, tmp_path)["results"]
    want = {"data": cv.expect(bytes(golden))["data"], "errors": []}
    for (name, _, err), r in zip(cases, results):
        assert "threw" not in r, (name, r.get("threw"))
        out = r["output"]
        if err is None:
            assert dict(out, warnings=None) == dict(want, warnings=None), name
        else:
            assert "data" not in out and len(out["errors"]) == 1 and err in out["errors"][0], (name, out)
    assert results[-1]["output"]["warnings"] == [
        "recvTime Invalid Date is not a time: record times not checked"]


# ---- a Hypothesis batch: one node run ------------------------------------------------------

NUMERIC = sorted(lorapack.RESOLUTION)
_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8)
_schema = st.lists(st.tuples(st.sampled_from(NUMERIC + ["boot_reason"]), st.sampled_from(quality.FLAGS),
                             st.integers(0, 5)), max_size=4)  # (quantity, flag, 0 = a failed read)


@st.composite
def batches(draw):
    """``(boot_epoch, records)``: what a node logs (seq + 1, on time, the same quantities),
    with the departures the format spells out: seq jumps, late, missing and arbitrary times,
    schema and flag changes, failed reads, text, status counters, gaps across epochs."""
    epoch = draw(st.integers(0, U32))
    seq = draw(st.integers(0, U32 - 10 ** 5))
    t = draw(st.one_of(st.none(), st.integers(0, U32 - 10 ** 7)))
    interval = draw(st.sampled_from((0, 60, 300, 1800)))
    schema = draw(_schema)
    level = draw(st.integers(-10 ** 6, 10 ** 6))
    records = []
    for _ in range(draw(st.integers(1, 8))):
        seq += draw(st.sampled_from((1, 1, 1, 2, 500)))
        step = draw(st.sampled_from(("on time", "on time", "jitter", "none", "any")))
        if step == "on time" and t is not None:
            t += interval
        elif step == "jitter" and t is not None:
            t = max(0, t + interval + draw(st.integers(-5, 5)))
        elif step == "none":
            t = None
        elif step == "any":
            t = draw(st.integers(0, U32 - 10 ** 7))
        kind = draw(st.sampled_from(("reading",) * 5 + ("status", "gap")))
        rec = {"seq": seq, "t": t}
        if kind == "gap":
            e1 = draw(st.sampled_from((epoch, max(0, epoch - 1), max(0, epoch - 5000))))
            first = draw(st.integers(0, U32))
            rec.update(kind="gap", dropped=draw(st.integers(0, U32)), first_epoch=e1, last_epoch=epoch,
                       first_seq=first, last_seq=draw(st.integers(first if e1 == epoch else 0, U32)))
            records.append(rec)
            continue
        if draw(st.integers(0, 5)) == 0:
            schema = draw(_schema)
        values = []
        for q, flag, fails in schema:
            level += draw(st.integers(-300, 300))
            v = None if fails == 0 else draw(_text) if q == "boot_reason" else level / 100
            values.append([q, v, flag])
        rec["values"] = values
        if kind == "status":
            rec.update(kind="status", counters=draw(st.dictionaries(
                _text, st.integers(-(2 ** 31 - 1), 2 ** 31 - 1), max_size=3)))
        records.append(rec)
    return epoch, records


@st.composite
def cases(draw):
    """A vector: a pack of such a batch, a damaged pack, or arbitrary bytes."""
    how = draw(st.sampled_from(("pack", "pack", "damaged", "junk")))
    recv = draw(st.one_of(st.none(), st.integers(0, U32)))
    if how == "junk":
        data = draw(st.binary(max_size=64))
        return cv.vector("junk", (b"\x01" + data) if draw(st.booleans()) else data, recv_time=recv)
    epoch, records = draw(batches())
    try:
        payload, _ = pack(records, draw(st.sampled_from((51, 115, 222, 242))), epoch)
    except ValueError:  # the first record alone is over the limit
        payload, _ = pack(records[:1], 10 ** 6, epoch)
    if how == "damaged":
        i = draw(st.integers(0, len(payload) - 1))
        p = bytearray(payload)
        what = draw(st.sampled_from(("flip", "cut", "insert")))
        if what == "flip":
            p[i] ^= draw(st.integers(1, 255))
        elif what == "cut":
            del p[i:]
        else:
            p.insert(i, draw(st.integers(0, 255)))
        payload = bytes(p)
    return cv.vector(how, payload, recv_time=recv)


def test_a_hypothesis_batch_decodes_identically(tmp_path):
    batch = []

    @settings(max_examples=250, deadline=None, database=None, phases=[Phase.generate])
    @given(cases())
    def collect(vector):
        batch.append(vector)

    collect()
    assert len(batch) >= 200
    for i, v in enumerate(batch):
        v["name"] = "%s %d" % (v["name"], i)
    out = run_node(batch, tmp_path)
    bad = disagreements(batch, out["results"])
    assert not bad, "%d of %d differ:\n%s" % (len(bad), len(batch), "\n".join(bad[:5]))
    valid = sum("data" in v["expect"] for v in batch)
    assert valid >= 50 and len(batch) - valid >= 25  # both kinds well represented
