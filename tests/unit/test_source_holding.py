"""The ChirpStack source's holding (gateway/sources/holding.py): uplinks the agent could not
store wait in bounded memory; past the bound the oldest is dropped, counted and becomes a
``Dropped`` for the outbox's gateway gap markers (real LoRaWAN packs, decoded as the
pipeline does)."""

import pytest

from gateway.sources import LORAWAN, Arrival
from gateway.outbox_gaps import Dropped
from gateway.sources.holding import Holding, gap_of
from protocol import lorapack

EUI, DEV = "70b3d57ed0061a2d", "sch1-yard-bin1"
T0 = 1767571200


class Item:
    def __init__(self, arrival):
        self.arrival = arrival


def uplink(first, n=3, epoch=3, eui=EUI, data=None):
    if data is None:
        recs = [{"seq": first + i, "t": T0 + 60 * i, "values": [["fill_ratio", 0.5, "ok"]]}
                for i in range(n)]
        data, taken = lorapack.pack(recs, 222, epoch)
        assert taken == n
    return Item(Arrival(LORAWAN, data, "chirpstack", dev_eui=eui, dedup_id="d-%d" % first))


def test_held_uplinks_come_back_oldest_first_and_leave_when_stored():
    h = Holding(4, {EUI.upper(): DEV})
    items = [uplink(3 * i) for i in range(3)]
    for it in items:
        assert h.hold(it) is None
    assert h.pending() == (3, 0) and h.waiting()
    got = h.take(2)
    assert got == items[:2] and h.pending() == (3, 0)  # handed out: still counted
    h.stored()
    assert h.hold(got[1], retried=True) is None  # refused again: back in the queue
    assert h.take(10) == [items[2], items[1]] and not h.waiting()
    h.stored()
    h.stored()
    assert h.pending() == (0, 0)
    assert h.counts == {"held": 3, "retried": 4, "dropped": 0, "dropped_unmarked": 0,
                        "gap_markers": 0, "records_marked": 0}


def test_past_the_bound_the_oldest_is_dropped_and_its_records_become_one_drop():
    h = Holding(2, {EUI: DEV})
    a, b, c, d = uplink(0), uplink(3), uplink(6, n=4), uplink(10)
    assert h.hold(a) is None and h.hold(b) is None
    assert h.hold(c) is a          # the oldest goes
    assert h.hold(d) is b
    assert h.take(10) == [c, d]
    assert h.counts["dropped"] == 2
    (drop,) = h.take_gaps()  # one drop for the device's epoch, widened
    assert drop == Dropped(DEV, 3, 0, 3, 5, 6, 0)
    assert h.pending() == (2, 1) and not h.waiting()  # drops wait for take_gaps, not retries
    h.gaps_refused([drop])         # the disk is still full: it waits, merged with new drops
    e = uplink(20, epoch=4)
    assert h.hold(e) is e          # every held one is handed out: the newcomer goes
    gaps = {(g.device_id, g.first_epoch): g for g in h.take_gaps()}
    assert gaps == {(DEV, 3): Dropped(DEV, 3, 0, 3, 5, 6, 0),
                    (DEV, 4): Dropped(DEV, 4, 20, 4, 22, 3, 0)}
    h.gaps_stored(list(gaps.values()))
    assert h.counts["gap_markers"] == 2 and h.counts["records_marked"] == 9
    assert h.pending()[1] == 0


def test_an_uplink_that_the_pipeline_would_reject_is_dropped_without_a_gap():
    h = Holding(1, {EUI: DEV})
    junk = uplink(0, data=b"\xff\x00garbage")
    stranger = uplink(0, eui="0101010101010101")
    assert h.hold(junk) is None
    assert h.hold(stranger) is junk
    assert h.hold(uplink(5)) is stranger
    assert h.counts["dropped"] == 2 and h.counts["dropped_unmarked"] == 2
    assert h.take_gaps() == []
    assert gap_of(uplink(7, n=2).arrival, {EUI: DEV}) == (DEV, 3, 7, 8, 2)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="max_held"):
        Holding(0)
    with pytest.raises(ValueError, match="devices"):
        Holding(4, {"not-an-eui": DEV})
