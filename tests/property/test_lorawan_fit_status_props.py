"""``fit_status`` (firmware/app/links/lorawan.py) decides which counters of a status record fit
an uplink from one pack and each counter's own bytes (``lorapack.counter_len``); these
properties check it keeps exactly the counters that packing the record again for each one,
as it did before, keeps, and that what it keeps packs within the room."""

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.app.links.lorawan import _STATUS_FIRST, fit_status
from protocol import lorapack
from protocol.lorapack import pack

T = 1772409600
names = st.one_of(st.sampled_from(_STATUS_FIRST + ("link_errors", "rx_sleep_ms", "bad-name!")),
                  st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=34))
values = st.one_of(st.integers(0, 2000), st.integers(-2 ** 40, 2 ** 40), st.booleans(), st.none())


def _fits(rec, room, epoch, step):
    try:
        pack((rec,), room, epoch, step)
        return True
    except ValueError:
        return False


def _reference(rec, room, epoch, step):
    """The cut as it was made before: a pack for every counter tried."""
    if _fits(rec, room, epoch, step):
        return rec
    counters = rec.get("counters") or {}
    kept = {}
    cut = dict(rec, counters=kept)
    # the documented order: _STATUS_FIRST's names first, in its order, then the rest by name
    for name in sorted(counters, key=lambda k: (0, _STATUS_FIRST.index(k), "") if k in _STATUS_FIRST else (1, 0, k)):
        kept[name] = counters[name]
        if not _fits(cut, room, epoch, step):
            del kept[name]
    return cut


@st.composite
def status_records(draw):
    rec = {"seq": draw(st.integers(0, 5000)), "t": draw(st.one_of(st.none(), st.integers(T, T + 10 ** 6))),
           "kind": "status", "counters": draw(st.dictionaries(names, values, max_size=40))}
    rec["values"] = draw(st.sampled_from((
        [["battery_v", 3.012, "ok"], ["boot_reason", "deepsleep", "ok"]],
        [["boot_reason", "power_on", "ok"]],
        [["battery_v", None, "sensor_failed"], ["boot_reason", "watchdog" * 3, "ok"]],
    )))
    return rec


@settings(max_examples=300, deadline=None)
@given(status_records(), st.integers(5, 242), st.integers(0, 1000), st.one_of(st.none(), st.integers(0, 3600)))
def test_fit_status_keeps_what_a_pack_per_counter_keeps(rec, room, epoch, step):
    got = fit_status(rec, room, epoch, step)
    want = _reference(rec, room, epoch, step)
    assert got == want
    if got is not rec and _fits(dict(got, counters={}), room, epoch, step):
        assert len(pack((got,), room, epoch, step)[0]) <= room


@given(names, values)
def test_counter_len_is_what_a_counter_adds_to_a_pack(name, value):
    base = {"seq": 1, "t": T, "kind": "status", "values": [], "counters": {}}
    try:
        n = lorapack.counter_len(name, value)
    except ValueError:
        try:
            pack((dict(base, counters={name: value}),), 242, 1)
        except ValueError:
            return
        raise AssertionError("counter_len refused a counter pack takes")
    with_it = pack((dict(base, counters={name: value}),), 242, 1)[0]
    assert len(with_it) == len(pack((base,), 242, 1)[0]) + n
