"""MQTT 3.1.1 packets, byte for byte against the OASIS spec (sections cited per test).

The expected bytes are worked by hand from the spec's field layouts, not produced by the
encoder: each comment spells out the fields.
"""

import pytest

from protocol import mqtt_packets as mp
from protocol.mqtt_packets import MQTTProtocolError


def h(s):
    return bytes.fromhex(s.replace(" ", ""))


# §2.2.3 Table 2.4: the boundaries of each varint length.
@pytest.mark.parametrize("n, encoded", [
    (0, "00"), (127, "7f"), (128, "80 01"), (16383, "ff 7f"), (16384, "80 80 01"),
    (2097151, "ff ff 7f"), (2097152, "80 80 80 01"), (268435455, "ff ff ff 7f"),
])
def test_remaining_length_boundaries(n, encoded):
    assert mp.encode_remaining_length(n) == h(encoded)
    assert mp.decode_remaining_length(b"\x30" + h(encoded)) == (n, 1 + len(h(encoded)))


@pytest.mark.parametrize("n", [-1, 268435456])
def test_remaining_length_out_of_range(n):
    with pytest.raises(ValueError, match="remaining length"):
        mp.encode_remaining_length(n)


def test_remaining_length_fifth_byte_is_an_error():
    with pytest.raises(MQTTProtocolError):
        mp.decode_remaining_length(h("30 ff ff ff ff 01"))
    assert mp.decode_remaining_length(h("30 ff ff")) is None  # incomplete, not an error


def test_connect_full():
    # §3.1: fixed 10 24 (36 bytes); protocol name 00 04 "MQTT"; level 04;
    # flags EC = user 80 | password 40 | will retain 20 | will QoS1 08 | will 04 | clean 0;
    # keep-alive 00 3C (60 s); payload: client id, will topic, will message, user, password.
    got = mp.encode_connect("node-1", keepalive_s=60, clean_session=False, user="u1",
                            password="pw", will=("t/w", b"off", 1, True))
    assert got == h("10 24 00 04 4d 51 54 54 04 ec 00 3c"
                    " 00 06 6e 6f 64 65 2d 31"   # "node-1"
                    " 00 03 74 2f 77"            # "t/w"
                    " 00 03 6f 66 66"            # b"off"
                    " 00 02 75 31"               # "u1"
                    " 00 02 70 77")              # "pw"


def test_connect_minimal_clean():
    # flags 02 = clean session only; keep-alive 0 (off)
    assert mp.encode_connect("a", keepalive_s=0) == h("10 0d 00 04 4d 51 54 54 04 02 00 00 00 01 61")


def test_connect_user_without_password_and_binary_password():
    assert mp.encode_connect("a", 10, False, user="u")[9] == 0x80
    got = mp.encode_connect("a", 10, False, user="u", password=b"\x00\xff")
    assert got[9] == 0xC0 and got.endswith(h("00 02 00 ff"))


@pytest.mark.parametrize("kwargs, word", [
    (dict(client_id="", clean_session=False), "client_id"),
    (dict(client_id="a", password="p"), "password"),
    (dict(client_id="a", keepalive_s=65536), "keepalive_s"),
    (dict(client_id="a\x00"), "client_id"),
    (dict(client_id="a", will=("t/#", b"", 0, False)), "topic"),
    (dict(client_id="a", will=("t", b"", 2, False)), "qos"),
])
def test_connect_bad_arguments_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        mp.encode_connect(**kwargs)


def test_publish_qos1_dup():
    # §3.3: first byte 3A = PUBLISH 30 | DUP 08 | QoS1 02; length 09;
    # topic 00 03 "a/b"; packet id 00 0A; payload "hi"
    assert mp.encode_publish("a/b", b"hi", qos=1, packet_id=10, dup=True) == h("3a 09 00 03 61 2f 62 00 0a 68 69")


def test_publish_qos0_retain_has_no_packet_id():
    assert mp.encode_publish("a", b"", retain=True) == h("31 03 00 01 61")


def test_publish_two_byte_length():
    got = mp.encode_publish("t", bytes(200), qos=1, packet_id=1)
    # body = 3 (topic) + 2 (id) + 200 = 205 = 0xCD -> varint CD 01
    assert got[:3] == h("32 cd 01") and len(got) == 3 + 205


@pytest.mark.parametrize("kwargs, word", [
    (dict(topic="a/+", payload=b""), "wildcard"),
    (dict(topic="", payload=b""), "topic"),
    (dict(topic="a", payload=b"", qos=2, packet_id=1), "qos"),
    (dict(topic="a", payload=b"", qos=1, packet_id=0), "packet_id"),
    (dict(topic="a", payload=b"", qos=1, packet_id=65536), "packet_id"),
    (dict(topic="a", payload=b"", dup=True), "dup"),
])
def test_publish_bad_arguments_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        mp.encode_publish(**kwargs)


def test_puback_pingreq_disconnect():
    assert mp.encode_puback(10) == h("40 02 00 0a")      # §3.4
    assert mp.encode_puback(65535) == h("40 02 ff ff")
    assert mp.encode_pingreq() == h("c0 00")             # §3.12
    assert mp.encode_disconnect() == h("e0 00")          # §3.14


def test_subscribe():
    # §3.8: 82 (flags 0010 required); length 08; packet id 00 01; "a/#"; requested QoS 01
    assert mp.encode_subscribe(1, [("a/#", 1)]) == h("82 08 00 01 00 03 61 2f 23 01")
    assert mp.encode_subscribe(2, [("a", 0), ("+/b", 1)]) == h("82 0c 00 02 00 01 61 00 00 03 2b 2f 62 01")


@pytest.mark.parametrize("bad", ["", "a/#/b", "a#", "a+/b", "#/a"])
def test_subscribe_rejects_bad_filters(bad):
    with pytest.raises(ValueError, match="topic_filter"):
        mp.encode_subscribe(1, [(bad, 1)])


def test_server_side_encoders():
    assert mp.encode_connack(True, 0) == h("20 02 01 00")
    assert mp.encode_suback(1, [1, 0x80]) == h("90 04 00 01 01 80")
    assert mp.encode_pingresp() == h("d0 00")


# ---- decoding ----

def test_decode_connack():
    p = mp.decode(h("20 02 01 00"))
    assert (p.kind, p.session_present, p.return_code) == (mp.CONNACK, True, 0)
    p = mp.decode(h("20 02 00 05"))
    assert (p.session_present, p.return_code) == (False, 5)
    assert mp.CONNACK_CODES[5] == "not authorized"


def test_decode_publish_from_server():
    p = mp.decode(h("3a 09 00 03 61 2f 62 00 0a 68 69"))
    assert (p.kind, p.topic, p.payload, p.qos, p.packet_id, p.dup, p.retain) == \
        (mp.PUBLISH, "a/b", b"hi", 1, 10, True, False)
    p = mp.decode(h("31 03 00 01 61"))
    assert (p.topic, p.payload, p.qos, p.packet_id, p.retain) == ("a", b"", 0, 0, True)


def test_decode_ack_packets():
    assert mp.decode(h("40 02 00 0a")).packet_id == 10
    p = mp.decode(h("90 04 00 01 01 80"))
    assert (p.kind, p.packet_id, p.granted) == (mp.SUBACK, 1, [1, 0x80])
    assert mp.decode(h("d0 00")).kind == mp.PINGRESP
    assert mp.decode(h("62 02 00 07")).kind == mp.PUBREL
    assert mp.decode(h("b0 02 00 07")).kind == mp.UNSUBACK


def test_reader_byte_by_byte_and_many_at_once():
    stream = h("20 02 00 00") + h("90 03 00 01 01") + mp.encode_publish("x/y", bytes(300), 1, 5) + h("d0 00")
    kinds = [mp.CONNACK, mp.SUBACK, mp.PUBLISH, mp.PINGRESP]
    r = mp.PacketReader(1024)
    got = []
    for i in range(len(stream)):
        r.feed(stream[i:i + 1])
        p = r.next()
        while p is not None:
            got.append(p)
            p = r.next()
    assert [p.kind for p in got] == kinds and got[2].payload == bytes(300)
    r = mp.PacketReader(1024)
    r.feed(stream)
    assert [r.next().kind for _ in kinds] == kinds and r.next() is None and r.buffered() == 0


def test_reader_refuses_oversized_length_before_the_body():
    r = mp.PacketReader(max_packet_bytes=8192)
    with pytest.raises(MQTTProtocolError, match="limit 8192"):
        r.feed(h("30 80 80 40"))  # declares 1,048,576 bytes; none of them sent
    with pytest.raises(MQTTProtocolError):
        r.feed(b"more")  # the stream is dead after an error


@pytest.mark.parametrize("data, why", [
    ("00 00", "reserved packet type"),
    ("f0 00", "reserved packet type"),
    ("30 ff ff ff ff 01", "Remaining Length"),
    ("42 02 00 01", "reserved flags"),             # PUBACK with flags 0010
    ("60 02 00 01", "reserved flags"),             # PUBREL without its 0010
    ("36 05 00 01 61 00 01", "QoS 3"),
    ("38 03 00 01 61", "DUP"),                     # QoS 0 with DUP
    ("32 05 00 01 61 00 00", "packet id 0"),
    ("40 02 00 00", "packet id 0"),
    ("30 03 00 01 23", "wildcard"),                # topic "#"
    ("30 03 00 01 ff", "UTF-8"),
    ("30 05 00 03 ed a0 80", "surrogate"),
    ("30 03 00 01 00", "U\\+0000"),
    ("30 02 00 00", "topic length"),
    ("30 03 00 05 61", "topic length"),
    ("20 02 02 00", "CONNACK"),
    ("20 02 00 06", "CONNACK"),
    ("20 02 01 04", "session present"),
    ("20 03 00 00 00", "CONNACK"),
    ("90 02 00 01", "SUBACK"),
    ("90 03 00 01 03", "SUBACK return code"),
    ("d0 01 00", "PINGRESP"),
    ("10 00", "not one a server sends"),           # CONNECT
    ("c0 00", "not one a server sends"),           # PINGREQ
    ("40 03 00 01 00", "length 2"),
])
def test_decode_rejects(data, why):
    with pytest.raises(MQTTProtocolError, match=why):
        mp.decode(h(data))


def test_decode_needs_exactly_one_packet():
    with pytest.raises(MQTTProtocolError):
        mp.decode(h("40 02 00"))
    with pytest.raises(MQTTProtocolError):
        mp.decode(h("40 02 00 01 d0"))


def test_next_raw_splits_client_packets():
    r = mp.PacketReader(1024)
    r.feed(mp.encode_connect("c") + mp.encode_pingreq())
    assert r.next_raw()[0] == mp.CONNECT
    assert r.next_raw() == (mp.PINGREQ, 0, b"")
