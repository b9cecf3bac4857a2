"""LoRa time on air against REFERENCE.md §6.1's worked values, the EU868 tables, and the
sliding-window duty-cycle and fair-use budgets."""

import math
import random

import pytest

from protocol import airtime, dutycycle
from protocol.dutycycle import DutyCycle, FairUse



def test_budget_names_stay_reachable_through_airtime():
    # protocol.dutycycle was split out of protocol.airtime (a node loads only the latter);
    # the old names still answer, as the same objects, and an unknown one is an AttributeError
    from protocol.airtime import SlidingWindow

    assert airtime.DutyCycle is DutyCycle and airtime.FairUse is FairUse and SlidingWindow is dutycycle.SlidingWindow
    assert airtime.subband(868100000) == "M" and airtime.HOUR_MS == 3600000 and airtime.DAY_MS == dutycycle.DAY_MS
    with pytest.raises(AttributeError, match="no_such_name"):
        airtime.no_such_name


# REFERENCE.md §6.1: ToA (ms) of 11-, 24- and 51-byte application payloads per data rate.
TABLE = {
    0: (1482.8, 1974.3, 2793.5),
    1: (823.3, 1069.1, 1560.6),
    2: (370.7, 493.6, 698.4),
    3: (205.8, 267.3, 390.1),
    4: (113.2, 143.9, 215.6),
    5: (61.7, 82.2, 118.0),
}
VECTORS = [(dr, n, TABLE[dr][i]) for dr in TABLE for i, n in enumerate((11, 24, 51))]
VECTORS.append((6, 11, 30.8))


@pytest.mark.parametrize("dr,n_app,expected_ms", VECTORS)
def test_reference_airtimes_to_a_tenth_of_a_ms(dr, n_app, expected_ms):
    sf, bw, _ = airtime.DR_EU868[dr]
    toa = airtime.time_on_air_ms(airtime.app_payload_to_phy(n_app), sf, bw)
    assert abs(toa - expected_ms) < 0.05
    assert airtime.dr_airtime_ms(dr, n_app) == toa


def test_empty_frame_and_exact_values():
    # 13-byte frame (no FRMPayload): SF7 46.3 ms, SF12 1155.1 ms (REFERENCE §6.1).
    assert airtime.time_on_air_ms(13, 7) == pytest.approx(46.336, abs=1e-9)
    assert airtime.time_on_air_ms(13, 12) == pytest.approx(1155.072, abs=1e-9)
    # 24 B at SF12: 12.25 + 33 symbols of 32.768 ms.
    assert airtime.time_on_air_ms(24, 12) == pytest.approx((12.25 + 33) * 32.768, abs=1e-9)


def _float_formula(pl, sf, bw, cr, pre, ih, crc, de):
    # The AN1200.13 formula as printed, in floats: an independent second implementation.
    tsym = (2 ** sf) / bw * 1000.0
    n = 8 + max(math.ceil((8 * pl - 4 * sf + 28 + 16 * crc - 20 * ih) / (4 * (sf - 2 * de))) * (cr + 4), 0)
    return (pre + 4.25) * tsym + n * tsym


def test_integer_implementation_matches_the_printed_formula_everywhere():
    for sf in range(6, 13):
        for bw in (125000, 250000, 500000):
            for cr in (1, 2, 3, 4):
                for pl in (0, 1, 5, 13, 24, 64, 128, 255):
                    for ih in (0, 1):
                        for crc in (0, 1):
                            for de in (0, 1):
                                got = airtime.time_on_air_ms(pl, sf, bw, cr, 8, not ih, bool(crc), bool(de))
                                assert got == pytest.approx(_float_formula(pl, sf, bw, cr, 8, ih, crc, de),
                                                            rel=1e-12)


def test_low_data_rate_optimize_is_automatic_for_sf11_and_sf12_at_125khz():
    for sf, bw, de in ((12, 125000, 1), (11, 125000, 1), (10, 125000, 0), (12, 250000, 0)):
        auto = airtime.time_on_air_ms(51, sf, bw)
        assert auto == airtime.time_on_air_ms(51, sf, bw, low_dr_optimize=bool(de))
    assert airtime.time_on_air_ms(51, 12, low_dr_optimize=False) < airtime.time_on_air_ms(51, 12)


def test_bad_arguments_name_themselves():
    for kwargs, name in (({"payload_bytes": 256, "sf": 7}, "payload_bytes"),
                         ({"payload_bytes": 10, "sf": 13}, "sf"),
                         ({"payload_bytes": 10, "sf": 7, "cr": 5}, "cr"),
                         ({"payload_bytes": 10.0, "sf": 7}, "payload_bytes")):
        with pytest.raises(ValueError, match=name):
            airtime.time_on_air_ms(**kwargs)
    with pytest.raises(ValueError, match="fopts"):
        airtime.app_payload_to_phy(11, fopts=16)
    with pytest.raises(ValueError, match="dr"):
        airtime.max_app_payload(7)


def test_payload_tables():
    assert airtime.app_payload_to_phy(11) == 24
    assert airtime.app_payload_to_phy(11, fopts=3) == 27
    assert [airtime.DR_EU868[d][2] for d in range(6)] == [51, 51, 51, 115, 242, 242]
    assert [airtime.DR_EU868[d][0] for d in range(6)] == [12, 11, 10, 9, 8, 7]
    assert [airtime.max_app_payload(d) for d in range(6)] == [51, 51, 51, 115, 222, 222]
    assert airtime.max_app_payload(5, repeater_compatible=False) == 242
    assert airtime.max_app_payload(3, fopts=5) == 110


def test_subbands():
    for f in (868100000, 868300000, 868500000):
        assert airtime.subband(f) == "M"
        assert airtime.subband(f, bw_hz=125000) == "M"
    for f in range(867100000, 867900001, 200000):
        assert airtime.subband(f, 125000) == "L"
    assert airtime.subband(868800000, 125000) == "N"
    assert airtime.subband(869525000, 125000) == "P"
    assert airtime.subband(869850000) == "Q"
    assert airtime.subband(864000000) == "K"
    assert airtime.subband(868000000) == "M"  # a bare boundary belongs to the upper band
    for f in (862000000, 868650000, 869300000, 869675000, 870000000):
        with pytest.raises(ValueError, match="freq_hz"):
            airtime.subband(f)
    with pytest.raises(ValueError):
        airtime.subband(868550000, 125000)  # 868.4875..868.6125 MHz straddles M and the gap
    assert airtime.duty_cycle("M") == 0.01
    assert airtime.duty_cycle("P") == 0.1
    assert [airtime.hourly_budget_ms(b) for b in "KLMNPQ"] == [3600, 36000, 36000, 3600, 360000, 36000]


def test_min_interval_is_100_times_the_airtime_at_one_percent():
    sf7 = airtime.dr_airtime_ms(5, 11)
    sf12 = airtime.dr_airtime_ms(0, 11)
    assert airtime.min_interval_ms(sf7) == pytest.approx(100 * sf7)
    assert round(airtime.min_interval_ms(sf7) / 1000, 1) == 6.2
    assert round(airtime.min_interval_ms(sf12) / 1000) == 148
    assert airtime.min_interval_ms(sf7, "N") == pytest.approx(1000 * sf7)


def test_ttn_fair_use_message_counts():
    # REFERENCE §6.2: 11-byte payloads: ≈ 486/day at SF7, 145 at SF9, 20 at SF12.
    assert [airtime.uplinks_per_day(airtime.dr_airtime_ms(d, 11)) for d in (5, 3, 0)] == [486, 145, 20]


# ---- DutyCycle ---------------------------------------------------------------------------

def test_duty_cycle_sends_refuses_and_waits_exactly_for_the_oldest_to_leave():
    toa = airtime.dr_airtime_ms(0, 51)  # 2793.5 ms, counted as 2794
    dc = DutyCycle()
    assert dc.can_send("M", toa, 0)
    for k in range(12):
        now = k * 280000
        assert dc.can_send("M", toa, now)
        dc.record("M", toa, now)
    now = 12 * 280000
    assert dc.used_ms("M", now) == 12 * 2794
    assert not dc.can_send("M", toa, now)  # 13 x 2794 > 36000
    wait = dc.wait_ms("M", toa, now)
    # The first frame ended at 2794; it leaves the hour that ends with the new frame when
    # now + wait + 2794 - 3600000 reaches 2794.
    assert wait == 2794 + 3600000 - (now + 2794) == 240000
    assert not dc.can_send("M", toa, now + wait - 1)
    assert dc.can_send("M", toa, now + wait)
    # Other sub-bands have their own budgets.
    assert dc.can_send("L", toa, now)
    assert dc.wait_ms("N", 3600, now) == 0
    assert not dc.can_send("N", 3601, now)
    with pytest.raises(ValueError, match="budget"):
        dc.wait_ms("N", 3601, now)


def test_duty_cycle_rejects_bad_input():
    dc = DutyCycle()
    with pytest.raises(ValueError, match="band"):
        dc.can_send("X", 10, 0)
    with pytest.raises(ValueError, match="now_ms"):
        dc.record("M", 10, 1.5)
    with pytest.raises(ValueError, match="toa_ms"):
        dc.record("M", -1, 0)


def _exact_worst_hour(log, window):
    # Exact on-time in the worst window ending at any transmission's end (the maxima).
    worst = 0
    for _, end in log:
        lo = end - window
        worst = max(worst, sum(max(0, min(e, end) - max(s, lo)) for s, e in log))
    return worst


@pytest.mark.parametrize("max_entries", [2, 5, 32])
def test_duty_cycle_never_exceeds_the_exact_sliding_window_and_stays_bounded(max_entries):
    rng = random.Random(max_entries)
    dc = DutyCycle(max_entries=max_entries)
    log = []
    now = 0
    for _ in range(400):
        toa = airtime.dr_airtime_ms(rng.randrange(6), rng.randrange(52))
        now += rng.choice((0, 10, 1000, 30000, 200000))
        if log and now < log[-1][1]:
            now = int(math.ceil(log[-1][1]))  # one radio: no overlapping frames
        wait = dc.wait_ms("M", toa, now)
        if wait:
            assert not dc.can_send("M", toa, now + wait - 1)
        now += wait
        assert dc.can_send("M", toa, now)
        dc.record("M", toa, now)
        log.append((now, now + toa))
        assert len(dc._bands["M"].entries) <= max_entries
    assert _exact_worst_hour(log, airtime.HOUR_MS) <= 36000


def test_a_full_list_merges_conservatively():
    dc = DutyCycle(max_entries=2)
    for now in (0, 1000000, 2000000):
        dc.record("M", 10000, now)
    # The two oldest merged into one record ending at the second's end: both still count
    # until 1010000 + 1 h, although the first alone would have left at 10000 + 1 h.
    assert dc.used_ms("M", 3600000 + 20000) == 30000
    assert dc.used_ms("M", 3600000 + 1010000) == 10000


# ---- FairUse -------------------------------------------------------------------------------

def test_ttn_fair_use_uplink_airtime_and_downlinks_over_24h():
    fu = FairUse()
    toa = airtime.dr_airtime_ms(0, 11)  # 1482.8 ms, counted as 1483
    for k in range(20):
        assert fu.can_uplink(toa, k * 60000)
        fu.record_uplink(toa, k * 60000)
    now = 20 * 60000
    assert fu.uplink_used_ms(now) == 20 * 1483
    assert not fu.can_uplink(toa, now)
    wait = fu.uplink_wait_ms(toa, now)
    assert wait == 1483 + airtime.DAY_MS - (now + 1483)
    assert fu.can_uplink(toa, now + wait) and not fu.can_uplink(toa, now + wait - 1)
    for k in range(10):
        assert fu.can_downlink(k)
        fu.record_downlink(k)
    assert not fu.can_downlink(100)
    assert fu.downlinks_used(100) == 10
    assert fu.can_downlink(airtime.DAY_MS)  # the first left the window
    with pytest.raises(ValueError, match="allowance"):
        fu.uplink_wait_ms(30001, 0)
