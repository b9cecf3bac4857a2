"""MQTT packets: the decoder fed arbitrary bytes raises only MQTTProtocolError; round trips.

CONNECT and SUBSCRIBE are client-to-server packets the node's decoder refuses, so their
round trips go through the small independent parser below, written from §3.1 and §3.8.
"""

import struct

from hypothesis import given, settings, strategies as st

from protocol import mqtt_packets as mp
from protocol.mqtt_packets import MQTTProtocolError

# Topic text: any Unicode except U+0000, surrogates and the wildcards.
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#")
topics = st.text(_chars, min_size=1, max_size=40)
packet_ids = st.integers(1, 65535)


def _drain(reader):
    out = []
    p = reader.next()
    while p is not None:
        out.append(p)
        p = reader.next()
    return out


@settings(max_examples=400)
@given(st.binary(max_size=300), st.integers(2, 512), st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_arbitrary_bytes_raise_only_protocol_errors(data, limit, cuts):
    r = mp.PacketReader(limit)
    pos = 0
    i = 0
    try:
        while pos < len(data):
            step = cuts[i % len(cuts)]
            r.feed(data[pos:pos + step])
            pos += step
            i += 1
            for p in _drain(r):
                assert p.kind in (mp.CONNACK, mp.PUBLISH, mp.PUBACK, mp.PUBREC, mp.PUBREL,
                                  mp.PUBCOMP, mp.SUBACK, mp.UNSUBACK, mp.PINGRESP)
            # never more than one incomplete packet (header + limit) held
            assert r.buffered() <= 5 + limit + step
    except MQTTProtocolError:
        pass


@given(st.binary(min_size=1, max_size=60))
def test_mutated_valid_stream_raises_only_protocol_errors(noise):
    stream = bytearray(mp.encode_connack(False, 0) + mp.encode_publish("a/b", b"xyz", 1, 7) + mp.encode_pingresp())
    for i, b in enumerate(noise):
        stream[(i * 7 + b) % len(stream)] ^= b
    r = mp.PacketReader(64)
    try:
        r.feed(bytes(stream))
        _drain(r)
    except MQTTProtocolError:
        pass


@given(topics, st.binary(max_size=2000), st.sampled_from([0, 1]), packet_ids, st.booleans(), st.booleans(),
       st.integers(1, 97))
def test_publish_round_trip_in_any_chunks(topic, payload, qos, pid, dup, retain, chunk):
    dup = dup and qos == 1
    data = mp.encode_publish(topic, payload, qos, pid, dup, retain)
    r = mp.PacketReader(4096)
    got = []
    for i in range(0, len(data), chunk):
        r.feed(data[i:i + chunk])
        got += _drain(r)
    assert len(got) == 1
    p = got[0]
    assert (p.topic, p.payload, p.qos, p.dup, p.retain) == (topic, payload, qos, dup, retain)
    assert p.packet_id == (pid if qos else 0)


@given(st.integers(0, mp.MAX_REMAINING_LENGTH))
def test_remaining_length_round_trip(n):
    enc = mp.encode_remaining_length(n)
    assert 1 <= len(enc) <= 4
    assert mp.decode_remaining_length(b"\x00" + enc) == (n, 1 + len(enc))


@given(st.booleans(), st.integers(0, 5), packet_ids, st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=5))
def test_server_packets_round_trip(sp, rc, pid, granted):
    sp = sp and rc == 0
    p = mp.decode(mp.encode_connack(sp, rc))
    assert (p.session_present, p.return_code) == (sp, rc)
    p = mp.decode(mp.encode_suback(pid, granted))
    assert (p.packet_id, p.granted) == (pid, granted)
    assert mp.decode(mp.encode_puback(pid)).packet_id == pid


# ---- an independent parser for client-to-server packets (test only) ----

def _take(body, pos):
    n = struct.unpack_from(">H", body, pos)[0]
    return body[pos + 2:pos + 2 + n], pos + 2 + n


def parse_connect(body):
    assert body[:7] == b"\x00\x04MQTT\x04"
    flags, keepalive = body[7], struct.unpack_from(">H", body, 8)[0]
    assert flags & 1 == 0
    out = {"clean_session": bool(flags & 2), "keepalive_s": keepalive, "will": None,
           "user": None, "password": None}
    cid, pos = _take(body, 10)
    out["client_id"] = cid.decode()
    if flags & 4:
        wt, pos = _take(body, pos)
        wp, pos = _take(body, pos)
        out["will"] = (wt.decode(), wp, (flags >> 3) & 3, bool(flags & 0x20))
    if flags & 0x80:
        u, pos = _take(body, pos)
        out["user"] = u.decode()
    if flags & 0x40:
        out["password"], pos = _take(body, pos)
    assert pos == len(body)
    return out


def parse_subscribe(body):
    pid = struct.unpack_from(">H", body, 0)[0]
    subs, pos = [], 2
    while pos < len(body):
        f, pos = _take(body, pos)
        subs.append((f.decode(), body[pos]))
        pos += 1
    return pid, subs


@given(st.text(_chars, min_size=1, max_size=23), st.integers(0, 65535), st.booleans(),
       st.none() | st.text(_chars, max_size=20), st.binary(max_size=40),
       st.none() | st.tuples(topics, st.binary(max_size=30), st.sampled_from([0, 1]), st.booleans()))
def test_connect_round_trip(cid, keepalive, clean, user, password, will):
    pw = password if user is not None else None
    r = mp.PacketReader(1 << 16)
    r.feed(mp.encode_connect(cid, keepalive, clean, user, pw, will))
    kind, flags, body = r.next_raw()
    assert (kind, flags, r.buffered()) == (mp.CONNECT, 0, 0)
    got = parse_connect(body)
    assert got == {"client_id": cid, "keepalive_s": keepalive, "clean_session": clean,
                   "user": user, "password": pw, "will": will}


_level = st.text(_chars.filter(lambda c: c != "/"), max_size=6)
filters = st.lists(_level | st.just("+"), min_size=1, max_size=4).map("/".join).flatmap(
    lambda f: st.sampled_from([f, f + "/#"])).filter(bool)


@given(packet_ids, st.lists(st.tuples(filters, st.sampled_from([0, 1])), min_size=1, max_size=4))
def test_subscribe_round_trip(pid, subs):
    r = mp.PacketReader(1 << 16)
    r.feed(mp.encode_subscribe(pid, subs))
    kind, flags, body = r.next_raw()
    assert (kind, flags) == (mp.SUBSCRIBE, 2)
    assert parse_subscribe(body) == (pid, subs)
