"""protocol.frame, protocol.cobs, protocol.serial_link: byte-exact frames and acks (golden hex
cross-checked with an independent ``hmac``/``struct`` construction), rejection of forged,
cross-type, truncated and replayed input, the node's ack check, the gateway's replay
classification, published COBS vectors, and the serial stream decoder."""

import hashlib
import hmac
import struct
import zlib

import pytest

from protocol import cobs, frame, serial_link
from protocol.frame import FrameError

KEY = bytes(range(16))  # test key 000102..0f (docs/protocol-frame.md uses the same)
DEV = "sch1-rm12-co2"
PAYLOAD = bytes.fromhex("83a10102a10103a10104")  # opaque to the frame layer
KEYS = {DEV: KEY}.get

GOLDEN_DATA = ("01010d736368312d726d31322d636f32000000070000002a0003"
               "83a10102a10103a10104"
               "bd2637253d485afc84557e2274eb9268")
GOLDEN_ACK = ("01020d736368312d726d31322d636f32000000070000002c"
              "a41a2e134fcd4cddd0312f106c15e120")
GOLDEN_SERIAL = ("001101010d736368312d726d31322d636f32010102070101022a200383a10102a10103a10104"
                 "bd2637253d485afc84557e2274eb92681ed14a5c00")


def reference_frame(frame_type, direction, fields, payload=b"", tag_len=16, key=KEY, dev=DEV):
    """An independent construction: struct + CPython hmac, as the docs describe it."""
    raw = dev.encode("ascii")
    body = struct.pack(">BBB", 1, frame_type, len(raw)) + raw + fields + payload
    mac = hmac.new(key, b"civicedge-frame-v1" + direction + body, hashlib.sha256).digest()
    return body + mac[:tag_len]


def test_data_frame_is_byte_exact():
    got = frame.encode_data(KEY, DEV, 7, 42, 3, PAYLOAD)
    want = reference_frame(0x01, b"U", struct.pack(">IIH", 7, 42, 3), PAYLOAD)
    assert got == want == bytes.fromhex(GOLDEN_DATA)
    # overhead for a 13-character device id: 3 + 13 + 10 header bytes + 16 tag bytes
    assert len(got) - len(PAYLOAD) == 42


def test_ack_is_byte_exact():
    got = frame.encode_ack(KEY, DEV, 7, 44)
    want = reference_frame(0x02, b"D", struct.pack(">II", 7, 44))
    assert got == want == bytes.fromhex(GOLDEN_ACK)
    assert len(got) == 40


def test_decode_round_trips_and_acks_the_frame():
    f = frame.decode_frame(bytes.fromhex(GOLDEN_DATA), KEYS, expect=frame.TYPE_DATA)
    assert f == frame.DataFrame(DEV, 7, 42, 3, PAYLOAD)
    assert (f.device_id, f.boot_epoch, f.first_seq, f.count, f.seq_through) == (DEV, 7, 42, 3, 44)
    assert f.payload == PAYLOAD
    assert frame.ack_for(KEY, f) == bytes.fromhex(GOLDEN_ACK)
    a = frame.decode_frame(bytes.fromhex(GOLDEN_ACK), KEYS, expect=frame.TYPE_ACK)
    assert a == frame.Ack(DEV, 7, 44)
    # bytearray and memoryview input decode the same
    assert frame.decode_frame(memoryview(bytearray.fromhex(GOLDEN_DATA)), KEYS) == f


@pytest.mark.parametrize("n", [8, 12, 16, 24, 32])
def test_tag_truncated_to_n_bytes(n):
    got = frame.encode_data(KEY, DEV, 7, 42, 3, PAYLOAD, tag_len=n)
    assert got == reference_frame(0x01, b"U", struct.pack(">IIH", 7, 42, 3), PAYLOAD, tag_len=n)
    assert len(got) == 26 + len(PAYLOAD) + n
    assert frame.decode_frame(got, KEYS, tag_len=n).payload == PAYLOAD
    ack = frame.encode_ack(KEY, DEV, 7, 44, tag_len=n)
    assert frame.decode_frame(ack, KEYS, tag_len=n) == frame.Ack(DEV, 7, 44)


def test_receiver_decides_the_tag_length():
    short_tag = frame.encode_data(KEY, DEV, 7, 42, 3, PAYLOAD, tag_len=8)
    with pytest.raises(FrameError) as info:
        frame.decode_frame(short_tag, KEYS)  # expects 16: the 8-byte tag is not accepted
    assert info.value.reason == "bad_tag"
    for n in (7, 33):
        with pytest.raises(ValueError, match="tag_len"):
            frame.encode_data(KEY, DEV, 7, 42, 3, PAYLOAD, tag_len=n)
        with pytest.raises(ValueError, match="tag_len"):
            frame.decode_frame(short_tag, KEYS, tag_len=n)


def reason(buf, keys=KEYS, **kw):
    with pytest.raises(FrameError) as info:
        frame.decode_frame(buf, keys, **kw)
    assert isinstance(info.value, ValueError)
    return info.value.reason


def test_forged_or_altered_frames_are_bad_tag():
    good = bytes.fromhex(GOLDEN_DATA)
    assert reason(good[:-1] + bytes([good[-1] ^ 0x01])) == "bad_tag"
    wrong_key = frame.encode_data(bytes(16), DEV, 7, 42, 3, PAYLOAD)
    assert reason(wrong_key) == "bad_tag"
    # a payload byte, the epoch, the seq: anything under the tag
    for at in (20, 24, len(good) - 17):
        bad = bytearray(good)
        bad[at] ^= 0x40
        assert reason(bytes(bad)) == "bad_tag"


def test_a_data_frame_is_never_an_ack_and_back():
    data = bytearray.fromhex(GOLDEN_DATA)
    ack = bytearray.fromhex(GOLDEN_ACK)
    assert reason(bytes(data), expect=frame.TYPE_ACK) == "type"
    assert reason(bytes(ack), expect=frame.TYPE_DATA) == "type"
    # rewriting the type byte does not help: the direction is under the MAC
    ack[1] = frame.TYPE_DATA
    ack += b"\x00\x00"   # make the lengths fit a data frame
    assert reason(bytes(ack)) == "bad_tag"
    # an ack built from a data frame's first 24 bytes under the data tag: bad tag
    forged = bytes([1, 2]) + bytes(data[2:24]) + bytes(data[-16:])
    assert reason(forged) == "bad_tag"


def test_structural_errors_have_their_reasons():
    good = bytes.fromhex(GOLDEN_DATA)
    assert reason(b"") == "short"
    assert reason(b"\x01\x01") == "short"
    assert reason(b"\x02" + good[1:]) == "version"
    assert reason(b"\x01\x07" + good[2:]) == "type"
    assert reason(good[:10]) == "short"
    assert reason(good[:3 + 13 + 10 + 15]) == "short"
    assert reason(bytes.fromhex(GOLDEN_ACK) + b"\x00") == "length"
    assert reason(b"\x01\x01\x00" + good[3:]) == "device_id"
    assert reason(b"\x01\x01\x21" + b"a" * 60) == "device_id"
    assert reason(b"\x01\x01\x03-ab" + bytes(30)) == "device_id"
    assert reason(b"\x01\x01\x03ABC" + bytes(30)) == "device_id"
    assert reason(good, keys=lambda d: None) == "unknown_device"
    assert reason(good + bytes(frame.MAX_FRAME_BYTES)) == "length"


def test_count_is_checked_after_the_tag():
    zero = reference_frame(0x01, b"U", struct.pack(">IIH", 7, 42, 0))
    assert reason(zero) == "count"
    past = reference_frame(0x01, b"U", struct.pack(">IIH", 7, 0xFFFFFFFF, 2))
    assert reason(past) == "count"
    last = reference_frame(0x01, b"U", struct.pack(">IIH", 7, 0xFFFFFFFF, 1))
    assert frame.decode_frame(last, KEYS).seq_through == 0xFFFFFFFF


def test_key_lookup_sees_only_the_device_id():
    asked = []

    def keys(device_id):
        asked.append(device_id)
        return KEY

    frame.decode_frame(bytes.fromhex(GOLDEN_DATA), keys)
    assert asked == [DEV]


def test_encode_refuses_bad_arguments_naming_them():
    cases = [
        (dict(device_id="Sch1"), "device_id"), (dict(device_id="-x"), "device_id"),
        (dict(device_id="a" * 33), "device_id"), (dict(device_id=""), "device_id"),
        (dict(boot_epoch=-1), "boot_epoch"), (dict(boot_epoch=1 << 32), "boot_epoch"),
        (dict(first_seq=1 << 32), "first_seq"), (dict(count=0), "count"),
        (dict(count=0x10000), "count"), (dict(first_seq=0xFFFFFFFF, count=2), "count"),
        (dict(payload="text"), "payload"), (dict(payload=bytes(frame.MAX_FRAME_BYTES)), "payload"),
        (dict(key=bytes(15)), "key"), (dict(key="0123456789abcdef"), "key"),
    ]
    for change, name in cases:
        args = dict(key=KEY, device_id=DEV, boot_epoch=7, first_seq=42, count=3, payload=PAYLOAD)
        args.update(change)
        with pytest.raises(ValueError, match=name):
            frame.encode_data(**args)
    with pytest.raises(ValueError, match="seq_through"):
        frame.encode_ack(KEY, DEV, 7, -1)
    assert len(frame.encode_data(KEY, "a" * 32, 0, 0, 1, b"")) == 3 + 32 + 10 + 16


def test_no_key_material_in_errors_or_reprs():
    secret = bytes.fromhex("5ec7e75ec7e75ec7e75ec7e75ec7e75e")
    keys = {DEV: secret}.get
    texts = []
    good = frame.encode_data(secret, DEV, 1, 2, 3, PAYLOAD)
    texts.append(repr(frame.decode_frame(good, keys)))
    texts.append(repr(frame.decode_frame(frame.encode_ack(secret, DEV, 1, 4), keys)))
    for buf in (good[:-1] + b"\x00", bytes.fromhex(GOLDEN_DATA)):
        with pytest.raises(FrameError) as info:
            frame.decode_frame(buf, keys)
        texts += [str(info.value), repr(info.value)]
    with pytest.raises(ValueError) as info:
        frame.encode_data(secret[:15], DEV, 1, 2, 3, PAYLOAD)
    texts.append(str(info.value))
    for text in texts:
        assert secret.hex() not in text and repr(secret) not in text and "5ec7" not in text


# --- the node's ack check -------------------------------------------------------------

def test_ack_trims_through_seq_through():
    assert frame.ack_trims(frame.Ack(DEV, 7, 44), 7, 44) == 44


def test_old_ack_of_the_same_epoch_trims_only_what_it_named():
    # replayed from an earlier exchange: those records were committed, nothing newer goes
    assert frame.ack_trims(frame.Ack(DEV, 7, 10), 7, 44) == 10


def test_ack_for_another_boot_epoch_is_refused():
    for epoch in (6, 8):
        with pytest.raises(FrameError) as info:
            frame.ack_trims(frame.Ack(DEV, epoch, 3), 7, 44)
        assert info.value.reason == "ack_epoch"


def test_ack_beyond_what_was_sent_is_refused():
    with pytest.raises(FrameError) as info:
        frame.ack_trims(frame.Ack(DEV, 7, 45), 7, 44)
    assert info.value.reason == "ack_beyond"
    with pytest.raises(FrameError) as info:
        frame.ack_trims(frame.Ack(DEV, 7, 0), 7, None)  # nothing sent in this epoch
    assert info.value.reason == "ack_beyond"
    with pytest.raises(FrameError) as info:
        frame.ack_trims(frame.DataFrame(DEV, 7, 0, 1, b""), 7, 44)
    assert info.value.reason == "type"


def test_node_side_end_to_end_with_decode():
    node_keys = {DEV: KEY}.get   # the node knows only its own key
    ack = frame.decode_frame(bytes.fromhex(GOLDEN_ACK), node_keys, expect=frame.TYPE_ACK)
    assert frame.ack_trims(ack, 7, 44) == 44
    other = frame.encode_ack(KEY, "sch1-rm12-tmp", 7, 44)
    with pytest.raises(FrameError) as info:
        frame.decode_frame(other, node_keys, expect=frame.TYPE_ACK)
    assert info.value.reason == "unknown_device"


# --- the gateway's replay classification -----------------------------------------------

def test_the_nodes_decode_ack_is_decode_frame_for_acks():
    # protocol.frame_ack_core (what a node loads to check an ack) verifies with the same checks
    # as decode_frame
    from protocol import frame_ack_core, frame_core

    ack = bytes.fromhex(GOLDEN_ACK)
    got = frame_ack_core.decode_ack(ack, KEYS)
    assert (got.device_id, got.boot_epoch, got.seq_through) == (DEV, 7, 44)
    assert frame.decode_frame(ack, KEYS, expect=frame.TYPE_ACK) == got
    assert frame.ack_trims(got, 7, 44) == 44
    for bad, reason in ((bytes.fromhex(GOLDEN_DATA), "type"), (ack[:-1] + bytes([ack[-1] ^ 1]), "bad_tag"),
                        (ack[:20], "short"), (b"\x02" + ack[1:], "version")):
        with pytest.raises(FrameError) as e:
            frame_ack_core.decode_ack(bad, KEYS)
        assert e.value.reason == reason
    assert frame.FrameError is frame_ack_core.FrameError and frame.encode_data_into is frame_core.encode_data_into


def test_the_nodes_encoding_half_does_not_load_the_ack_half():
    # a node packing its frames holds frame_core (and the layout it shares), not the ack's code
    import subprocess
    import sys

    code = ("import sys; from protocol import frame_core; "
            "print(sorted(m for m in sys.modules if m.startswith('protocol.frame')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['protocol.frame_core', 'protocol.frame_wire']"
    code = code.replace("frame_core", "frame_ack_core", 1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['protocol.frame_ack_core', 'protocol.frame_wire']"


def test_classify_new_duplicate_replay():
    C = frame.classify
    assert C(None, 0, 0) == frame.NEW
    assert C((7, 44), 7, 45) == frame.NEW          # next frame
    assert C((7, 44), 7, 60) == frame.NEW          # after a gap
    assert C((7, 44), 8, 0) == frame.NEW           # new boot epoch
    assert C((7, 44), 7, 44) == frame.DUPLICATE    # resent after a lost ack
    assert C((7, 44), 7, 3) == frame.DUPLICATE
    assert C((7, 44), 6, 900) == frame.REPLAY      # older boot epoch
    assert C((7, 44), 0, 0) == frame.REPLAY


def test_advance_never_goes_back():
    assert frame.advance(None, 7, 44) == (7, 44)
    assert frame.advance((7, 44), 7, 50) == (7, 50)
    assert frame.advance((7, 44), 8, 0) == (8, 0)
    assert frame.advance((7, 44), 7, 10) == (7, 44)
    assert frame.advance([7, 44], 6, 99) == (7, 44)


# --- COBS (Cheshire & Baker; the examples of Wikipedia's "Consistent Overhead Byte Stuffing")

COBS_VECTORS = [
    ("00", "010100"),
    ("0000", "01010100"),
    ("00110000", "0102110101" + "00"),
    ("11220033", "031122023300"),
    ("11223344", "051122334400"),
    ("11000000", "021101010100"),
    (bytes(range(1, 255)).hex(), "ff" + bytes(range(1, 255)).hex() + "00"),
    (bytes(range(0, 255)).hex(), "01ff" + bytes(range(1, 255)).hex() + "00"),
    (bytes(range(1, 256)).hex(), "ff" + bytes(range(1, 255)).hex() + "02ff00"),
    (bytes(range(2, 256)).hex() + "00", "ff" + bytes(range(2, 256)).hex() + "010100"),
    (bytes(range(3, 256)).hex() + "0001", "fe" + bytes(range(3, 256)).hex() + "020100"),
    ("", "0100"),
]


@pytest.mark.parametrize("raw_hex,wire_hex", COBS_VECTORS)
def test_cobs_published_vectors(raw_hex, wire_hex):
    raw, wire = bytes.fromhex(raw_hex), bytes.fromhex(wire_hex)
    assert cobs.encode(raw) + b"\x00" == wire
    assert cobs.decode(wire[:-1]) == raw
    assert len(wire) - 1 <= cobs.max_encoded_len(len(raw))


@pytest.mark.parametrize("raw_hex,wire_hex", COBS_VECTORS)
def test_cobs_encode_into_a_buffer_and_in_place(raw_hex, wire_hex):
    raw, wire = bytes.fromhex(raw_hex), bytes.fromhex(wire_hex)
    out = bytearray(b"\xee" * (cobs.max_encoded_len(len(raw)) + 5))
    end = cobs.encode_into(raw, out, 2)
    assert bytes(out[2:end]) + b"\x00" == wire and out[:2] == b"\xee\xee" and set(out[end:]) <= {0xEE}
    gap = cobs.max_encoded_len(len(raw)) - len(raw)  # the packet that far in: encoded over itself
    buf = bytearray(1 + gap) + raw + bytes(1)
    end = cobs.encode_into(memoryview(buf)[1 + gap:1 + gap + len(raw)], buf, 1)
    assert bytes(buf[1:end]) + b"\x00" == wire


def test_cobs_encode_into_refuses_a_buffer_too_small_naming_it():
    with pytest.raises(ValueError, match="out must hold 257 bytes from index 1, has 255"):
        cobs.encode_into(bytes(range(1, 256)), bytearray(256), 1)


@pytest.mark.parametrize("bad", ["", "00", "0311", "031100", "02", "05112233"])
def test_cobs_rejects_what_no_encoder_makes(bad):
    with pytest.raises(cobs.CobsError):
        cobs.decode(bytes.fromhex(bad))
    assert issubclass(cobs.CobsError, ValueError)


# --- serial framing ---------------------------------------------------------------------

def test_serial_packet_is_byte_exact_with_little_endian_crc32():
    f = bytes.fromhex(GOLDEN_DATA)
    packet = serial_link.encode_packet(f)
    assert packet == bytes.fromhex(GOLDEN_SERIAL)
    assert packet[0] == 0 and packet[-1] == 0 and b"\x00" not in packet[1:-1]
    assert cobs.decode(packet[1:-1]) == f + struct.pack("<I", zlib.crc32(f))
    assert len(packet) - len(f) == 7   # CRC 4 + COBS 1 + two delimiters


def test_data_frame_built_into_a_buffer_is_the_same_bytes():
    buf = bytearray(b"\xee" * 100)
    end = frame.encode_data_into(buf, 3, KEY, DEV, 7, 42, 3, PAYLOAD)
    assert bytes(buf[3:end]) == bytes.fromhex(GOLDEN_DATA) and buf[:3] == b"\xee" * 3 and set(buf[end:]) == {0xEE}
    assert end - 3 == frame.data_frame_len(DEV, len(PAYLOAD))
    with pytest.raises(ValueError, match="buf must hold 52 bytes from index 50, has 50"):
        frame.encode_data_into(buf, 50, KEY, DEV, 7, 42, 3, PAYLOAD)
    with pytest.raises(ValueError, match="count"):
        frame.encode_data_into(buf, 0, KEY, DEV, 7, 42, 0, PAYLOAD)


def test_data_frame_sealed_around_a_payload_in_place_is_the_same_bytes():
    # seal_data_into: the payload already in the buffer after room for the header (a node packs
    # its SenML there); the header and tag written around it give encode_data's bytes
    head = frame.data_frame_len(DEV, 0, 0)
    for at, tail in ((0, b""), (5, b"\xee" * 40)):  # a growable buffer, and one with room after
        buf = bytearray(b"\xee" * (at + head)) + PAYLOAD + tail
        end = frame.seal_data_into(buf, at, KEY, DEV, 7, 42, 3, len(PAYLOAD))
        assert bytes(buf[at:end]) == bytes.fromhex(GOLDEN_DATA) == frame.encode_data(KEY, DEV, 7, 42, 3, PAYLOAD)
        assert buf[:at] == b"\xee" * at and end == at + frame.data_frame_len(DEV, len(PAYLOAD))
        assert len(buf) == max(end, at + head + len(PAYLOAD) + len(tail))
    with pytest.raises(ValueError, match="buf must hold the payload up to index 46, has 45"):
        frame.seal_data_into(bytearray(45), 0, KEY, DEV, 7, 42, 3, 20)
    with pytest.raises(ValueError, match="count"):
        frame.seal_data_into(bytearray(100), 0, KEY, DEV, 7, 42, 0, 20)
    with pytest.raises(ValueError, match="device_id"):
        frame.seal_data_into(bytearray(100), 0, KEY, "Bad", 7, 42, 1, 20)
    with pytest.raises(ValueError, match="payload too long"):
        frame.seal_data_into(bytearray(5000), 0, KEY, DEV, 7, 42, 1, 4096)
    from protocol import frame_core

    assert frame.seal_data_into is frame_core.seal_data_into  # the gateway's module re-exports it


class _Uart:
    def __init__(self):
        self.written = []

    def write(self, buf):
        self.written.append(bytes(buf))
        return len(buf)

    def read(self, n):
        return b""


@pytest.mark.parametrize("payload_len", [0, 10, 900, 1500, 3000])
def test_serial_link_writes_the_gateways_bytes_from_its_one_buffer(payload_len):
    from firmware.app.links.serial import FRAME_ROOM, SerialLink
    from simulators.clock import VirtualClock

    uart = _Uart()
    link = SerialLink(uart, VirtualClock(), DEV, KEY, ack_timeout_ms=0)
    buf = link._buf
    for i in range(3):  # the same buffer, frame after frame
        payload = bytes((i + j) % 7 for j in range(payload_len))  # zeros among the bytes
        data = link._frame(7, 10 * i, 2, payload)
        assert bytes(data) == frame.encode_data(KEY, DEV, 7, 10 * i, 2, payload)
        link.exchange(data, 7, 10 * i + 1)
        assert uart.written[-1] == serial_link.encode_packet(frame.encode_data(KEY, DEV, 7, 10 * i, 2, payload))
        assert link._buf is buf
    # frames up to FRAME_ROOM are built in the buffer; a bigger one in new objects, same bytes
    assert isinstance(data, memoryview) == (frame.data_frame_len(DEV, payload_len) <= FRAME_ROOM)


def test_encode_packet_bounds():
    with pytest.raises(ValueError, match="frame"):
        serial_link.encode_packet(b"")
    with pytest.raises(ValueError, match="frame"):
        serial_link.encode_packet(bytes(frame.MAX_FRAME_BYTES + 1))


def frames_and_packets(n=3):
    fs = [frame.encode_data(KEY, DEV, 7, 10 * i, 2, bytes([i]) * (5 + 90 * i)) for i in range(n)]
    return fs, [serial_link.encode_packet(f) for f in fs]


def test_stream_decoder_byte_by_byte_and_in_one_go():
    fs, packets = frames_and_packets()
    stream = b"".join(packets)
    d = serial_link.SerialDecoder()
    got = []
    for i in range(len(stream)):
        got += d.feed(stream[i:i + 1])
    assert got == fs
    d2 = serial_link.SerialDecoder()
    assert d2.feed(stream) == fs
    assert d.counters == d2.counters == {"frames": 3, "crc": 0, "cobs": 0, "oversize": 0}
    assert d.buffered == 0


def test_stream_decoder_partial_packets_wait_for_the_rest():
    fs, packets = frames_and_packets(1)
    d = serial_link.SerialDecoder()
    assert d.feed(packets[0][:9]) == []
    assert d.feed(None) == [] and d.feed(b"") == []
    assert d.buffered == 8
    assert d.feed(packets[0][9:]) == fs


def test_stream_decoder_resynchronises_after_garbage():
    fs, packets = frames_and_packets()
    garbage = bytes([0x31, 0x32, 0x7F, 0xFF, 0x05])   # no 0x00: ends at the next delimiter
    d = serial_link.SerialDecoder()
    got = d.feed(garbage + packets[0] + b"\x13\x37" + packets[1] + b"\x00\x00\x00" + packets[2])
    assert got == fs
    assert d.counters["frames"] == 3 and d.errors == 2


def test_stream_decoder_counts_crc_and_cobs_errors_and_keeps_going():
    fs, packets = frames_and_packets()
    d = serial_link.SerialDecoder()
    bad_crc = bytearray(packets[0])
    bad_crc[6] ^= 0x04                       # a device_id byte: still valid COBS, bad CRC
    bad_cobs = bytearray(packets[1])
    bad_cobs[1] = 0xFE                       # first code byte now runs past the packet
    short = b"\x00\x03\x01\x02\x00"          # decodes to 2 bytes: cannot hold a CRC
    got = d.feed(bytes(bad_crc) + bytes(bad_cobs) + short + packets[2])
    assert got == [fs[2]]
    assert d.counters == {"frames": 1, "crc": 2, "cobs": 1, "oversize": 0}


def test_stream_decoder_drops_oversize_without_buffering_it():
    d = serial_link.SerialDecoder(max_frame=64)
    ok = frame.encode_data(KEY, DEV, 7, 0, 1, b"x")           # 43 bytes
    big = frame.encode_data(KEY, DEV, 7, 1, 1, bytes(range(1, 200)))
    got = d.feed(serial_link.encode_packet(big)[:120])
    assert got == [] and d.buffered == 0 and d.counters["oversize"] == 1
    got = d.feed(serial_link.encode_packet(big)[120:] + serial_link.encode_packet(ok))
    assert got == [ok]
    assert d.counters == {"frames": 1, "crc": 0, "cobs": 0, "oversize": 1}
    # a packet that fits the COBS bound but decodes past max_frame is oversize too
    d = serial_link.SerialDecoder(max_frame=64)
    assert d.feed(b"\x00" + cobs.encode(bytes(69)) + b"\x00") == []
    assert d.counters["oversize"] == 1
    with pytest.raises(ValueError, match="max_frame"):
        serial_link.SerialDecoder(max_frame=0)


def test_serial_then_frame_decode_end_to_end():
    fs, packets = frames_and_packets()
    d = serial_link.SerialDecoder()
    out = [frame.decode_frame(f, KEYS, expect=frame.TYPE_DATA) for f in d.feed(b"".join(packets))]
    assert [(x.first_seq, x.count) for x in out] == [(0, 2), (10, 2), (20, 2)]
