"""Gateway-made gap markers (gateway/outbox_gaps.py: ``Outbox.mark_dropped``; its pure part
``outbox_policy.summarize_ranges`` + ``mark_drops``):
records the gateway dropped before storing them (LoRaWAN uplinks held past the ChirpStack
source's bound while the disk was full) are counted as the outbox's own drops and covered by
the device's gap marker, which goes upstream as a ``gateway_outbox`` gap message with the
exact count and keys, never as a node's ``node_log`` gap. A real outbox file on a virtual
clock; the disk made full by capping the file."""

import json

import pytest

from gateway import outbox_policy as policy
from gateway.outbox import Outbox, OutboxFull, OutboxRecord
from gateway.outbox_gaps import Dropped
from gateway.outbox_policy import ALARM, ROUTINE, GapMarker
from gateway.upstream import GAPS, GATEWAY_OUTBOX, encode_gap_markers
from simulators.clock import VirtualClock

BIN = "sch1-yard-bin1"


def rec(seq, device=BIN, epoch=3):
    return OutboxRecord(device, epoch, seq, {"seq": seq, "t": None,
                                             "values": [["fill_ratio", 0.5, "ok"]]}, ROUTINE)


@pytest.fixture
def ob(tmp_path):
    with Outbox(str(tmp_path / "outbox.db"), 1 << 20, 7 * 86400, VirtualClock()) as o:
        yield o


def test_a_drop_is_counted_marked_and_goes_upstream_as_the_gateways_with_its_exact_count(ob):
    assert ob.mark_dropped([Dropped(BIN, 3, 0, 3, 39, 40)]) == 40
    assert ob.gaps() == [GapMarker(1, BIN, 3, 0, 3, 39, 40, 0)]
    st = ob.stats()
    assert st.dropped == {ALARM: 0, ROUTINE: 40} and st.gap_markers == 1
    assert st.dropped_by_reason == {policy.SIZE: 0, policy.AGE: 0, policy.FULL: 40}
    assert st.rows == {ALARM: 0, ROUTINE: 0} and st.total_bytes == 0  # nothing was stored
    (msg,) = encode_gap_markers(ob.take_gaps(), "sch1", "gw1")
    assert msg.topic == "civicedge/v1/sch1/%s/gaps" % BIN and msg.kind == GAPS
    assert msg.reason == GATEWAY_OUTBOX and msg.gap_ids == (1,)
    assert json.loads(msg.payload) == {
        "gateway": "gw1", "device_id": BIN, "reason": "gateway_outbox", "marker": 1,
        "dropped": 40, "alarms": 0, "first_epoch": 3, "first_seq": 0, "last_epoch": 3,
        "last_seq": 39}
    assert ob.ack_gaps([1]) == 1 and ob.gaps() == []
    assert ob.stats().dropped_by_reason[policy.FULL] == 40  # the counters keep the totals


def test_drops_widen_the_devices_open_marker_but_never_one_in_flight(tmp_path):
    one = policy.prepare([rec(0)])[1]
    ob = Outbox(str(tmp_path / "o.db"), one * 2, 7 * 86400, VirtualClock())
    try:
        ob.put_many([rec(i) for i in range(4)])  # the size bound drops 0, 1: a marker
        assert ob.gaps() == [GapMarker(1, BIN, 3, 0, 3, 1, 2, 0)]
        ob.mark_dropped([(BIN, 3, 10, 3, 19, 10), (BIN, 4, 0, 4, 4, 5), ("other", 1, 7, 1, 7, 1)])
        assert ob.gaps() == [GapMarker(1, BIN, 3, 0, 4, 4, 17, 0),  # widened, one a device
                             GapMarker(2, "other", 1, 7, 1, 7, 1, 0)]
        (taken, _) = ob.take_gaps()
        ob.mark_dropped([Dropped(BIN, 4, 5, 4, 9, 5)])  # 1 is in flight: a new marker
        assert ob.gaps()[2] == GapMarker(3, BIN, 4, 5, 4, 9, 5, 0)
        assert ob.ack_gaps([taken.gap_id]) == 1  # what was sent is what was marked then
        assert sum(g.dropped for g in ob.gaps()) == 6
        st = ob.stats()
        assert st.dropped[ROUTINE] == 2 + 16 + 5
        assert (st.dropped_by_reason[policy.SIZE], st.dropped_by_reason[policy.FULL]) == (2, 21)
    finally:
        ob.close()


def test_a_full_disk_refuses_a_marker_and_changes_nothing(ob):
    ob.put_many([rec(i) for i in range(20)])
    ob.cap_file_bytes(0)  # the file cannot grow: a marker that needs a new page is refused
    before = None
    for i in range(2000):  # markers of new devices fill the gaps table's pages
        before = (ob.gaps(), ob.stats())
        try:
            ob.mark_dropped([Dropped("dev-%04d-%s" % (i, "x" * 40), 1, 0, 1, 9, 10)])
        except OutboxFull as e:
            assert "the disk is full" in str(e) and "free disk space" in str(e)
            break
    else:
        pytest.fail("the capped file never filled")
    assert (ob.gaps(), ob.stats()) == before  # rolled back: no marker, no count
    ob.cap_file_bytes(1 << 30)  # room again: the same drop is marked
    assert ob.mark_dropped([Dropped("late", 1, 0, 1, 9, 10)]) == 10
    assert ob.gaps()[-1].device_id == "late"


@pytest.mark.parametrize("drop, says", [
    (("", 1, 0, 1, 0, 1), "device_id"),
    ((BIN, -1, 0, 1, 0, 1), "first_epoch"),
    ((BIN, 1, 0, 1, 2 ** 32, 1), "last_seq"),
    ((BIN, 2, 0, 1, 5, 1), "first key is after the last"),
    ((BIN, 1, 0, 1, 5, 0), "dropped must be"),
    ((BIN, 1, 0, 1, 5, 2, 3), "alarms 0..dropped"),
    ((BIN, 1, 0), "a drop needs"),
])
def test_a_bad_drop_is_a_value_error_naming_it_and_nothing_is_marked(ob, drop, says):
    with pytest.raises(ValueError, match=says):
        ob.mark_dropped([Dropped(BIN, 1, 0, 1, 0, 1), drop])
    with pytest.raises(ValueError, match="reason"):
        ob.mark_dropped([Dropped(BIN, 1, 0, 1, 0, 1)], reason="bored")
    assert ob.gaps() == [] and ob.stats().dropped[ROUTINE] == 0
    assert ob.mark_dropped([]) == 0


def test_dropped_ranges_make_one_marker_a_device_in_device_order():
    open_b = GapMarker(7, "b", 1, 5, 1, 6, 2, 1)
    drops = [Dropped("c", 2, 3, 2, 4, 2), Dropped("b", 1, 0, 1, 1, 2),
             Dropped("c", 1, 9, 1, 9, 1, 1)]
    got = policy.mark_drops({"b": open_b}, policy.summarize_ranges(drops))
    assert got == [GapMarker(7, "b", 1, 0, 1, 6, 4, 1), GapMarker(None, "c", 1, 9, 2, 4, 3, 1)]
