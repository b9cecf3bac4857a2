"""Hypothesis properties of COBS, the node frame and the serial stream decoder: round trips,
no 0x00 inside encoded data, every single-bit flip rejected, arbitrary bytes raising only
FrameError (decode_frame) or nothing at all (the stream decoder), bounded buffering."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import cobs, frame, serial_link
from protocol.frame import FrameError

KEY = bytes(range(32))
u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
device_ids = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,31}\Z")
tag_lens = st.integers(min_value=8, max_value=32)
keys = st.binary(min_size=16, max_size=32)


@st.composite
def data_frames(draw):
    first_seq = draw(u32)
    count = draw(st.integers(min_value=1, max_value=min(0xFFFF, 0xFFFFFFFF - first_seq + 1)))
    return dict(device_id=draw(device_ids), boot_epoch=draw(u32), first_seq=first_seq,
                count=count, payload=draw(st.binary(max_size=300)))


@given(st.binary(max_size=1200))
def test_cobs_round_trip_and_no_zero_inside(raw):
    enc = cobs.encode(raw)
    assert b"\x00" not in enc
    assert len(raw) < len(enc) <= cobs.max_encoded_len(len(raw))
    assert cobs.decode(enc) == raw


@given(st.binary(max_size=1200), st.integers(min_value=0, max_value=3))
def test_cobs_encode_into_in_place_is_encode(raw, start):
    # the packet placed just far enough into the buffer and encoded over itself
    gap = cobs.max_encoded_len(len(raw)) - len(raw)
    buf = bytearray(start + gap) + raw
    end = cobs.encode_into(memoryview(buf)[start + gap:], buf, start)
    assert bytes(buf[start:end]) == cobs.encode(raw)


@given(data_frames(), keys, tag_lens, st.integers(min_value=0, max_value=40))
def test_data_frame_into_a_buffer_is_encode_data(fields, key, tag_len, at):
    want = frame.encode_data(key, tag_len=tag_len, **fields)
    buf = bytearray(at + len(want) + 3)
    end = frame.encode_data_into(buf, at, key, tag_len=tag_len, **fields)
    assert bytes(buf[at:end]) == want and end == at + len(want)


@given(st.binary(max_size=600))
def test_cobs_decode_raises_only_cobs_error(junk):
    try:
        raw = cobs.decode(junk)
    except cobs.CobsError:
        return
    assert cobs.decode(cobs.encode(raw)) == raw


@given(data_frames(), keys, tag_lens)
def test_data_frame_round_trip(fields, key, tag_len):
    buf = frame.encode_data(key, tag_len=tag_len, **fields)
    got = frame.decode_frame(buf, {fields["device_id"]: key}.get, tag_len=tag_len,
                             expect=frame.TYPE_DATA)
    assert got == frame.DataFrame(**fields)
    assert got.seq_through == fields["first_seq"] + fields["count"] - 1


@given(device_ids, u32, u32, keys, tag_lens)
def test_ack_round_trip(device_id, boot_epoch, seq_through, key, tag_len):
    buf = frame.encode_ack(key, device_id, boot_epoch, seq_through, tag_len)
    got = frame.decode_frame(buf, {device_id: key}.get, tag_len=tag_len, expect=frame.TYPE_ACK)
    assert got == frame.Ack(device_id, boot_epoch, seq_through)


@settings(max_examples=60)
@given(data_frames(), st.booleans(), st.data())
def test_every_single_bit_flip_is_rejected(fields, as_ack, data):
    if as_ack:
        buf = frame.encode_ack(KEY, fields["device_id"], fields["boot_epoch"], fields["first_seq"])
    else:
        buf = frame.encode_data(KEY, **fields)
    # every bit of the header and tag, and a sample of payload bits
    bits = list(range(8 * min(len(buf), 64))) + list(range(8 * (len(buf) - 16), 8 * len(buf)))
    bits.append(data.draw(st.integers(min_value=0, max_value=8 * len(buf) - 1)))
    for bit in bits:
        bad = bytearray(buf)
        bad[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises(FrameError):
            frame.decode_frame(bytes(bad), lambda d: KEY)


@given(st.binary(max_size=400), st.sampled_from(["any", "none"]), tag_lens)
def test_decode_frame_raises_only_frame_error_on_arbitrary_bytes(junk, lookup, tag_len):
    key_for = (lambda d: KEY) if lookup == "any" else (lambda d: None)
    try:
        frame.decode_frame(junk, key_for, tag_len=tag_len)
    except FrameError as e:
        assert e.reason in ("short", "length", "version", "type", "device_id",
                            "unknown_device", "bad_tag", "count")
    else:
        pytest.fail("arbitrary bytes decoded as an authentic frame")


@given(st.binary(min_size=1, max_size=40), st.binary(max_size=300))
def test_plausible_headers_with_junk_still_only_frame_error(head, tail):
    buf = bytes([frame.VERSION, head[0] % 3, len(head) % 40]) + head + tail
    with pytest.raises(FrameError):
        frame.decode_frame(buf, lambda d: KEY)


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(min_value=1, max_value=64))
def test_stream_decoder_never_raises_and_stays_bounded(chunks, max_frame):
    d = serial_link.SerialDecoder(max_frame=max_frame)
    limit = cobs.max_encoded_len(max_frame + serial_link.CRC_LEN)
    for chunk in chunks:
        for f in d.feed(chunk):
            assert 0 < len(f) <= max_frame
        assert d.buffered <= limit
    assert d.counters["frames"] + d.errors >= 0


@st.composite
def noisy_streams(draw):
    frames = draw(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=5))
    garbage = st.binary(max_size=30).map(lambda b: b.replace(b"\x00", b""))
    stream = b""
    for f in frames:
        stream += draw(garbage) + serial_link.encode_packet(f)
    stream += draw(garbage)
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=10)))
    return frames, stream, cuts


@given(noisy_streams())
def test_stream_decoder_recovers_every_frame_between_garbage_however_split(case):
    frames, stream, cuts = case
    d = serial_link.SerialDecoder()
    got, prev = [], 0
    for cut in cuts + [len(stream)]:
        got += d.feed(stream[prev:cut])
        prev = cut
    assert got == frames
    assert d.counters["frames"] == len(frames)


@given(st.lists(st.binary(min_size=1, max_size=120), min_size=2, max_size=4), st.data())
def test_a_corrupted_byte_loses_at_most_its_own_packet(frames, data):
    packets = [serial_link.encode_packet(f) for f in frames]
    victim = data.draw(st.integers(min_value=0, max_value=len(packets) - 1))
    at = data.draw(st.integers(min_value=1, max_value=len(packets[victim]) - 2))
    new = data.draw(st.integers(min_value=0, max_value=255).filter(
        lambda v: v != packets[victim][at]))
    bad = bytearray(packets[victim])
    bad[at] = new
    packets[victim] = bytes(bad)
    d = serial_link.SerialDecoder()
    got = d.feed(b"".join(packets))
    assert got == [f for i, f in enumerate(frames) if i != victim]
    assert d.errors >= 1
