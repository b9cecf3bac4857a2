"""FramedLink on CPython with the real flash log and a scripted peer: what trims the log,
and batches too large for one frame."""

from firmware.app.links.framed import FramedLink
from firmware.app.state import NodeState
from firmware.app.store import RecordLog
from protocol import frame
from protocol.senml_decode import decode_pack_bytes
from simulators.clock import VirtualClock

KEY = bytes(range(16))
DEV = "sch1-rm12-co2"


class Peer(FramedLink):
    """Answers every frame with what ``reply(frame) -> bytes or None`` gives."""

    def __init__(self, reply, **kw):
        FramedLink.__init__(self, VirtualClock(), DEV, KEY, **kw)
        self.reply = reply
        self.sent = []

    def exchange(self, data, boot_epoch, last_seq):
        f = frame.decode_frame(data, {DEV: KEY}.get, expect=frame.TYPE_DATA)
        self.sent.append(f)
        answer = self.reply(f)
        return None if answer is None else self.check_ack(answer, boot_epoch, last_seq)


def log_with(tmp_path, records):
    state = NodeState(str(tmp_path))
    log = RecordLog(str(tmp_path), 1 << 20, state=state)
    state.boot("power_on")
    for r in records:  # one wake's append each, as a node with its link down does
        log.append(r)
    return log


def good_ack(f):
    return frame.encode_ack(KEY, DEV, f.boot_epoch, f.seq_through)


def status(n):
    counters = dict(("counter_number_%02d" % i, 1000 + i) for i in range(n))
    return {"t": 1767571200, "kind": "status", "values": [["boot_reason", "power_on", "ok"]], "counters": counters}


def test_only_a_verified_ack_trims(tmp_path):
    log = log_with(tmp_path, [{"t": 1767571200, "values": [["co2_ppm", 600 + i, "ok"]]} for i in range(5)])
    forged = Peer(lambda f: frame.encode_ack(bytes(16), DEV, f.boot_epoch, f.seq_through))
    assert forged.deliver(log) == 0
    assert forged.counters["bad_acks"] == 1 and log.pending_count() == 5
    assert Peer(good_ack).deliver(log) == 5
    assert log.pending_count() == 0


def test_a_backlog_too_big_for_one_frame_goes_in_several(tmp_path):
    log = log_with(tmp_path, [status(30) for _ in range(12)])  # ~1 KB each as SenML
    link = Peer(good_ack, max_batch_records=16)
    assert link.deliver(log) == 12
    assert len(link.sent) >= 2
    assert all(len(f.payload) <= frame.MAX_FRAME_BYTES for f in link.sent)
    seqs = [r["seq"] for f in link.sent for r in decode_pack_bytes(f.payload)["records"]]
    assert seqs == sorted(seqs) and len(seqs) == 12


def test_a_frame_spans_its_seqs_even_when_they_skip(tmp_path):
    # seqs can skip (a reservation lost to a power cut); the ack must still cover the last one
    state = NodeState(str(tmp_path))
    log = RecordLog(str(tmp_path), 1 << 20, state=state)
    state.boot("power_on")
    log.append({"t": None, "values": [["co2_ppm", 600, "ok"]]})
    state.take_seqs(5)  # five seqs handed out and never logged
    log.append({"t": None, "values": [["co2_ppm", 601, "ok"]]})
    link = Peer(good_ack)
    assert link.deliver(log) == 2
    (f,) = link.sent
    assert (f.first_seq, f.seq_through) == (0, 6)
    assert log.pending_count() == 0


def test_next_frame_builds_without_sending_and_says_whether_more_is_pending(tmp_path):
    # the pack half alone (the MQTT deep-sleep node builds its frame before it connects)
    log = log_with(tmp_path, [{"t": None, "values": [["co2_ppm", 600 + i, "ok"]]} for i in range(5)])
    link = Peer(good_ack, max_batch_records=3)
    data, epoch, last, more = link.next_frame(log)
    f = frame.decode_frame(bytes(data), {DEV: KEY}.get, expect=frame.TYPE_DATA)
    assert (f.boot_epoch, f.first_seq, f.seq_through, last, more) == (epoch, 0, 2, 2, True)
    assert link.sent == [] and log.pending_count() == 5  # nothing sent, nothing trimmed
    assert link.deliver(log) == 5
    assert link.next_frame(log) is None
    log.append({"t": None, "values": [["co2_ppm", 700, "ok"]]})
    assert link.next_frame(log)[3] is False  # one record, the whole of what is pending


def test_a_pack_encoded_in_place_gives_the_same_frames(tmp_path):
    # one buffer (in_place): the pack encoded after room for the header, the frame sealed around
    # it; the frames are the bytes of a link with separate pack and frame buffers, big ones too
    records = [{"t": None, "values": [["co2_ppm", 600 + i, "ok"]]} for i in range(5)] + [status(30) for _ in range(4)]
    frames = []
    for in_place in (False, True):
        (tmp_path / str(in_place)).mkdir()
        log = log_with(tmp_path / str(in_place), records)
        link = Peer(good_ack, max_batch_records=4)
        link._frame_buffer(1024 + 20, at=20, in_place=in_place)
        assert (link._pack is link._buf) == in_place
        assert link.deliver(log) == len(records) and log.pending_count() == 0
        frames.append([frame.encode_data(KEY, DEV, f.boot_epoch, f.first_seq, f.count, f.payload) for f in link.sent])
    assert frames[0] == frames[1] and len(frames[0]) >= 3


def test_a_pack_is_senml_encode_pack_byte_for_byte_whatever_its_head_takes():
    # the pack is encoded in one pass, its CBOR array head written at the end: one byte up to
    # 23 SenML records, two up to 255, three beyond (the records moved up for the longer ones)
    from protocol import senml

    heads = []
    for records in ([{"t": None, "values": [["co2_ppm", 600, "ok"]]}], [status(3)], [status(30)],
                    [status(30) for _ in range(9)]):
        records = [dict(r, seq=i) for i, r in enumerate(records)]
        want = senml.encode_pack(DEV, 7, records)
        heads.append(want[0])
        for in_place in (False, True):
            link = Peer(good_ack)
            link._frame_buffer(64, at=5, in_place=in_place)
            n = link._encode_pack(7, records)
            start = link._at + link._head if in_place else 0
            assert bytes(link._pack[start:start + n]) == want and len(link._pack) == start + n
    assert heads == [0x81, 0x84, 0x98, 0x99]  # one-byte heads (1 and 4 records), then two, then three bytes


def test_the_ack_code_is_loaded_for_the_check_and_released_after_it(tmp_path, monkeypatch):
    # a node packs without protocol.frame_ack_core in its heap: check_ack loads it and releases
    # it (drivers.release, which a node does and CPython does only when told), good ack or bad
    import sys

    import drivers
    import protocol
    from protocol import frame_ack_core

    monkeypatch.setattr(drivers, "RELEASE", True)
    # the modules as they were, put back afterwards (a reloaded module has new exception classes)
    monkeypatch.setitem(sys.modules, "protocol.frame_ack_core", frame_ack_core)
    monkeypatch.setattr(protocol, "frame_ack_core", frame_ack_core)
    log = log_with(tmp_path, [{"t": 1767571200, "values": [["co2_ppm", 600 + i, "ok"]]} for i in range(3)])
    forged = Peer(lambda f: frame.encode_ack(bytes(16), DEV, f.boot_epoch, f.seq_through))
    assert forged.deliver(log) == 0 and forged.counters["bad_acks"] == 1
    assert "protocol.frame_ack_core" not in sys.modules
    link = Peer(good_ack)
    assert link.deliver(log) == 3 and log.pending_count() == 0
    assert "protocol.frame_ack_core" not in sys.modules
