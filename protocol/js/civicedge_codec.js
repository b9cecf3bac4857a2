/*
 * civicedge LoRaWAN payload codec for ChirpStack v4 and The Things Stack (TTS).
 *
 * Decodes the civicedge "pack" (format version 1) that nodes send on FPort 2: a batch of
 * readings, status and gap records of one boot epoch. The format is specified byte by byte
 * in docs/protocol-lorawan.md; protocol/lorapack.py encodes it and
 * protocol/lorapack_decode.py is the reference decoder this file follows step for step
 * (tests/sim/test_codec_js.py checks both agree on every vector of
 * simulators/codec_vectors.py, valid and malformed).
 *
 * Plain ECMAScript 5.1 (TTS runs ES5.1; ChirpStack runs QuickJS): var, function, no
 * ES2015 syntax or library calls. Entry point: decodeUplink(input), the LoRaWAN Payload
 * Codec API (TS013): input {bytes, fPort, recvTime?, variables?} ->
 *   {data: {version, boot_epoch, records: [...]}, warnings: [...], errors: []}
 * or, for anything that is not a well-formed pack, {errors: ["what (where)"], warnings: []}.
 * It never throws.
 *
 * A record is
 *   {seq, kind: "reading" | "status" | "gap", t?, time?, ...}
 * t: seconds since 1970 (UTC), time: the same as "2026-01-01T00:00:00Z"; both are absent
 * when the node's clock was not trusted. Readings and status records add
 *   values: [{quantity, value?, unit?, flag}, ...]
 * in the order the node sent them (a quantity may appear twice, e.g. hot and cold pipe);
 * value is absent when the read failed (flag "sensor_failed"), unit is the SenML unit
 * (absent for text such as boot_reason). Status records add counters: {name: integer}.
 * Gap records add dropped, first_epoch, first_seq, last_epoch, last_seq: the flash log
 * dropped that many records, keys (first_epoch, first_seq) through (last_epoch, last_seq).
 * Absent rather than null: ChirpStack turns a returned null into an empty protobuf Value.
 *
 * The pack port defaults to 2 (link.lorawan.port in the node's config.json); a ChirpStack
 * device variable "civicedge_fport" overrides it per device.
 */

var civicedge = (function () {
    var VERSION = 1;
    var PACK_PORT = 2;
    var EPOCH_S = 1704067200;          // absolute times: seconds since 2024-01-01T00:00:00Z
    var U32 = 4294967295;
    var VARINT_MAX = 34359738367;      // 2^35 - 1: five varint bytes, exact in a double
    var VALUES_MAX = 32;
    var TEXT_MAX = 64;
    var COUNTER_NAME_MAX = 32;
    var CLOCK_AHEAD_S = 300;           // a record this far after recvTime gets a warning
    var RUN = 0x80, S = 0x10, F = 0x08, Q = 0x04, E = 0x10, NONE_BIT = 0x08;
    var KINDS = ["reading", "status", "gap"];

    // protocol/quantities.py (code, quantity, SenML unit) with the wire denominator of
    // protocol/lorapack.py RESOLUTION (0: text). Codes are stable forever.
    var QUANTITIES = {
        1: ["co2_ppm", "ppm", 1],
        2: ["temperature_c", "Cel", 128],
        3: ["rh_percent", "%RH", 10],
        4: ["no2_ppb", "ppb", 10],
        5: ["no2_ugm3", "ug/m3", 10],
        6: ["distance_cm", "cm", 1],
        7: ["fill_ratio", "/", 1000],
        8: ["battery_v", "V", 100],
        9: ["boot_reason", null, 0],
        10: ["uptime_s", "s", 1],
        11: ["rssi_dbm", "dBm", 1]
    };
    // protocol/quantities.py FLAG_CODES, by code.
    var FLAGS = ["ok", "stuck", "spike", "out_of_range", "sensor_failed", "time_unsynced"];

    var has = Object.prototype.hasOwnProperty;

    function PackError(message) {
        this.message = message;
    }

    function fail(message) {
        throw new PackError(message);
    }

    function unzz(z) {
        return z % 2 ? -(z + 1) / 2 : z / 2;
    }

    function Reader(bytes) {
        this.buf = bytes;
        this.pos = 0;
    }

    Reader.prototype.byte = function () {
        if (this.pos >= this.buf.length) {
            fail("truncated at byte " + this.pos);
        }
        this.pos += 1;
        return this.buf[this.pos - 1];
    };

    // Unsigned LEB128, at most 5 bytes; arithmetic, not 32-bit bit operators.
    Reader.prototype.varint = function () {
        var n = 0, scale = 1, i, b;
        for (i = 0; i < 5; i++) {
            b = this.byte();
            n += (b & 0x7f) * scale;
            if (!(b & 0x80)) {
                return n;
            }
            scale *= 128;
        }
        fail("varint longer than 5 bytes at byte " + this.pos);
    };

    Reader.prototype.ascii = function (limit) {
        var n = this.varint(), s = "", i, c;
        if (n > limit || this.pos + n > this.buf.length) {
            fail("bad text length " + n + " at byte " + this.pos);
        }
        for (i = 0; i < n; i++) {
            c = this.buf[this.pos + i];
            if (c < 0x20 || c > 0x7e) {
                fail("non-printable text byte at " + this.pos);
            }
            s += String.fromCharCode(c);
        }
        this.pos += n;
        return s;
    };

    // An own, enumerable property even for names such as "__proto__" (counter names are
    // any printable ASCII).
    function put(obj, name, value) {
        Object.defineProperty(obj, name, {value: value, enumerable: true, writable: true,
                                          configurable: true});
    }

    function isoTime(t) {
        return new Date(t * 1000).toISOString().replace(".000Z", "Z");
    }

    function decodeGap(r, st, ctrl, rec) {
        var dropped, e1, e2, first, last;
        if (ctrl & F) {
            fail("gap record with flags");
        }
        dropped = r.varint();
        e1 = st.epoch;
        e2 = st.epoch;
        if (ctrl & E) {
            e1 = st.epoch + unzz(r.varint());
            e2 = e1 + r.varint();
        }
        first = r.varint();
        last = r.varint();
        if (e1 === e2) {
            last += first;
        }
        if (dropped > U32 || e1 < 0 || e1 > U32 || e2 > U32 || first > U32 || last > U32) {
            fail("gap field out of range");
        }
        if (e2 < e1 || (e2 === e1 && last < first)) {
            fail("gap ends before it starts");
        }
        rec.dropped = dropped;
        rec.first_epoch = e1;
        rec.first_seq = first;
        rec.last_epoch = e2;
        rec.last_seq = last;
        return rec;
    }

    function decodeValues(r, st, ctrl, kind) {
        var shape = st.shape[kind], codes = shape[0], nibbles = shape[1];
        var n, i, b, got, seen, k, key, entry, nib, v, w, item, values = [];
        if (ctrl & S) {
            n = r.varint();
            if (n > VALUES_MAX) {
                fail(n + " values in one record");
            }
            codes = [];
            nibbles = [];
            for (i = 0; i < n; i++) {
                codes.push(r.varint());
                nibbles.push(0);
            }
        }
        if (ctrl & F) {
            got = [];
            for (i = 0; i < codes.length; i += 2) {
                b = r.byte();
                got.push(b >> 4);
                if (i + 1 < codes.length) {
                    got.push(b & 0x0f);
                } else if (b & 0x0f) {
                    fail("padding nibble not zero");
                }
            }
            nibbles = got;
        }
        st.shape[kind] = [codes, nibbles];
        seen = {};
        for (i = 0; i < codes.length; i++) {
            // the k-th value of a quantity follows the k-th value of that quantity before
            k = has.call(seen, codes[i]) ? seen[codes[i]] : 0;
            seen[codes[i]] = k + 1;
            key = codes[i] * 64 + k;
            entry = has.call(QUANTITIES, codes[i]) ? QUANTITIES[codes[i]] : null;
            if (entry === null) {
                fail("unknown quantity code " + codes[i]);
            }
            nib = nibbles[i];
            if ((nib & 7) >= FLAGS.length) {
                fail("unknown flag " + (nib & 7));
            }
            item = {quantity: entry[0]};
            if (!(nib & NONE_BIT)) {
                if (entry[2] === 0) {
                    v = r.ascii(TEXT_MAX);
                } else {
                    w = (has.call(st.last, key) ? st.last[key] : 0) + unzz(r.varint());
                    if (Math.abs(w) > VARINT_MAX) {
                        fail(entry[0] + " drifts out of range");
                    }
                    st.last[key] = w;
                    v = entry[2] === 1 ? w : w / entry[2];
                }
                item.value = v;
            }
            if (entry[1] !== null) {
                item.unit = entry[1];
            }
            item.flag = FLAGS[nib & 7];
            values.push(item);
        }
        return values;
    }

    function decodeRecord(r, st, ctrl) {
        var kind = ctrl >> 5, seq, tmode, t, rec, counters, n, i, name;
        if (kind > 2) {
            fail("unknown record kind " + kind);
        }
        seq = st.seq + 1 + (ctrl & Q ? r.varint() : 0);
        tmode = ctrl & 3;
        if (tmode === 0) {
            t = st.t === null ? null : st.t + st.interval;
        } else if (tmode === 1) {
            if (st.t === null) {
                fail("time delta without a previous time");
            }
            t = st.t + st.interval + unzz(r.varint());
        } else if (tmode === 2) {
            t = EPOCH_S + unzz(r.varint());
        } else {
            t = null;
        }
        if (seq > U32 || (t !== null && (t < 0 || t > U32))) {
            fail("seq or time out of range");
        }
        st.seq = seq;
        st.t = t;
        rec = {seq: seq, kind: KINDS[kind]};
        if (t !== null) {
            rec.t = t;
            rec.time = isoTime(t);
        }
        if (kind === 2) {
            return decodeGap(r, st, ctrl, rec);
        }
        rec.values = decodeValues(r, st, ctrl, kind);
        if (kind === 1) {
            counters = {};
            n = r.varint();
            for (i = 0; i < n; i++) {
                name = r.ascii(COUNTER_NAME_MAX);
                put(counters, name, unzz(r.varint()));
            }
            rec.counters = counters;
        }
        return rec;
    }

    // The pack in `bytes` (an array of integers 0..255) as {version, boot_epoch, records};
    // throws PackError, with `where` saying how far decoding got.
    function unpack(bytes, where) {
        var r = new Reader(bytes), epoch, firstSeq, interval, count, st, out = [], ctrl, n, i;
        where.reader = r;
        if (r.byte() !== VERSION) {
            fail("unknown pack version " + bytes[0]);
        }
        epoch = r.varint();
        firstSeq = r.varint();
        interval = r.varint();
        count = r.byte();
        if (epoch > U32 || firstSeq > U32 || interval > U32 || count === 0) {
            fail("bad header");
        }
        where.count = count;
        st = {seq: firstSeq - 1, t: null, interval: interval, last: {}, epoch: epoch,
              shape: [[[], []], [[], []]]};
        while (out.length < count) {
            where.record = out.length + 1;
            ctrl = r.byte();
            if (ctrl & RUN) {
                n = (ctrl & 0x7f) + 1;
                if (out.length + n > count) {
                    fail("run of " + n + " passes the count " + count);
                }
                for (i = 0; i < n; i++) {
                    where.record = out.length + 1;
                    out.push(decodeRecord(r, st, 0));
                }
            } else {
                out.push(decodeRecord(r, st, ctrl));
            }
        }
        where.record = 0;
        if (r.pos !== bytes.length) {
            fail((bytes.length - r.pos) + " trailing bytes");
        }
        return {version: VERSION, boot_epoch: epoch, records: out};
    }

    // input.bytes as a plain array of integers 0..255, or an error message.
    function readBytes(input) {
        var b = input.bytes, out = [], i, x;
        if (b === null || typeof b !== "object" || typeof b.length !== "number") {
            return "input.bytes must be an array of bytes, got " + typeof b;
        }
        for (i = 0; i < b.length; i++) {
            x = b[i];
            if (typeof x !== "number" || x < 0 || x > 255 || Math.floor(x) !== x) {
                return "input.bytes[" + i + "] must be an integer 0..255, got " + x;
            }
            out.push(x);
        }
        return out;
    }

    // The FPort packs are expected on: the device variable civicedge_fport, else 2.
    function packPort(input) {
        var v = input.variables, p;
        if (v && typeof v === "object" && has.call(v, "civicedge_fport")) {
            p = Number(v.civicedge_fport);
            if (!(p >= 1 && p <= 223 && Math.floor(p) === p)) {
                return "device variable civicedge_fport must be an FPort 1..223, got "
                    + v.civicedge_fport;
            }
            return p;
        }
        return PACK_PORT;
    }

    function clockWarnings(input, data) {
        var rt = input.recvTime, ms, recv, i, rec;
        if (rt === undefined || rt === null) {
            return [];
        }
        ms = typeof rt.getTime === "function" ? rt.getTime() : new Date(rt).getTime();
        if (typeof ms !== "number" || ms !== ms) {
            return ["recvTime " + rt + " is not a time: record times not checked"];
        }
        recv = Math.floor(ms / 1000);
        for (i = 0; i < data.records.length; i++) {
            rec = data.records[i];
            if (has.call(rec, "t") && rec.t - recv > CLOCK_AHEAD_S) {
                return ["record seq " + rec.seq + " is time-stamped " + (rec.t - recv)
                    + " s after the uplink was received: the node's clock is ahead"];
            }
        }
        return [];
    }

    function errorOut(message) {
        return {errors: ["civicedge pack: " + message], warnings: []};
    }

    function decodeUplink(input) {
        var bytes, port, where = {reader: null, record: 0, count: 0}, data, at;
        try {
            if (input === null || typeof input !== "object") {
                return errorOut("input must be an object {bytes, fPort}, got " + input);
            }
            port = packPort(input);
            if (typeof port === "string") {
                return errorOut(port);
            }
            if (input.fPort !== undefined && input.fPort !== null && Number(input.fPort) !== port) {
                return errorOut("FPort " + input.fPort + " carries no civicedge pack (packs come on FPort "
                    + port + ")");
            }
            bytes = readBytes(input);
            if (typeof bytes === "string") {
                return errorOut(bytes);
            }
            try {
                data = unpack(bytes, where);
            } catch (e) {
                if (!(e instanceof PackError)) {
                    throw e;
                }
                at = " at byte " + (where.reader === null ? 0 : where.reader.pos) + " of "
                    + bytes.length;
                if (where.record > 0) {
                    return errorOut(e.message + " (record " + where.record + " of " + where.count
                        + "," + at + ")");
                }
                return errorOut(e.message + " (" + (where.count ? "after the " + where.count
                    + " records" : "header") + "," + at + ")");
            }
            return {data: data, warnings: clockWarnings(input, data), errors: []};
        } catch (bug) {
            return errorOut("internal error: " + bug);
        }
    }

    return {
        decodeUplink: decodeUplink,
        QUANTITIES: QUANTITIES,
        FLAGS: FLAGS,
        PACK_PORT: PACK_PORT,
        EPOCH_S: EPOCH_S,
        CLOCK_AHEAD_S: CLOCK_AHEAD_S
    };
})();

// The entry point ChirpStack and TTS call.
function decodeUplink(input) {
    return civicedge.decodeUplink(input);
}

// Node.js (tests): neither ChirpStack nor TTS defines `module`.
if (typeof module !== "undefined" && module.exports) {
    module.exports = civicedge;
}
