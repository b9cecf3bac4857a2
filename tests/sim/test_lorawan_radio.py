"""The simulated LoRa radio: link budget against the published sensitivities, airtime from
protocol.airtime, collisions and capture on one channel and SF, several gateways,
interference and gateway outages, the duty-cycle check, and seeded determinism."""

import math

import pytest

from protocol import airtime
from simulators.atmodem_radio import CHANNELS_HZ, Uplink
from simulators.lorawan_radio import (
    PATH_LOSS, Radio, noise_floor_dbm, path_loss_db, reception_probability, sensitivity_dbm)

CH0, CH1, CH2 = CHANNELS_HZ
EXACT = {"sigma_db": 0.0}  # no fading: powers are the mean link budget


def at_power(rssi_dbm, tx_dbm=16.0):
    """The distance (m) at which the mean RSSI is ``rssi_dbm`` under the default model."""
    pl = tx_dbm - rssi_dbm
    return PATH_LOSS["d0_m"] * 10 ** ((pl - PATH_LOSS["pl_d0_db"]) / (10 * PATH_LOSS["exponent"]))


def test_link_budget_matches_the_published_figures():
    assert noise_floor_dbm(125000) == pytest.approx(-117.03, abs=0.01)
    # Within 1 dB of the SX1272 datasheet's RFS_L125 (-124 SF7 ... -137 SF12).
    for sf, published in zip(range(7, 13), (-124, -127, -130, -133, -135, -137)):
        assert abs(sensitivity_dbm(sf) - published) <= 1.0
    assert sensitivity_dbm(7, 250000) == pytest.approx(sensitivity_dbm(7) + 10 * math.log10(2))
    assert path_loss_db(40) == pytest.approx(127.41)
    assert path_loss_db(400) == pytest.approx(127.41 + 20.8)
    with pytest.raises(ValueError, match="sf"):
        sensitivity_dbm(6)
    with pytest.raises(ValueError, match="distance_m"):
        path_loss_db(-1)


def test_range_grows_with_sf_and_probability_is_half_at_the_sensitivity():
    for sf in range(7, 13):
        d = at_power(sensitivity_dbm(sf))
        assert reception_probability(d, sf) == pytest.approx(0.5)
        assert reception_probability(d, sf, path_loss=EXACT) == 1.0
        assert reception_probability(d * 1.01, sf, path_loss=EXACT) == 0.0
    assert 160 < at_power(sensitivity_dbm(7)) < 180 and 650 < at_power(sensitivity_dbm(12)) < 700


def test_airtime_and_frame_end_come_from_protocol_airtime():
    r = Radio(sites={"n": {"g": 10}})
    for dr in range(7):
        tx = r.transmit("n", CH0, dr, airtime.app_payload_to_phy(11), 1000000 * dr * 10)
        assert tx.airtime_ms == pytest.approx(airtime.dr_airtime_ms(dr, 11))
        assert tx.end_us == tx.start_us + math.ceil(tx.airtime_ms * 1000)
        assert (tx.sf, tx.bw_hz) == airtime.DR_EU868[dr][:2]
    with pytest.raises(ValueError, match="dr"):
        r.transmit("n", CH0, 7, 20, 0)


def test_a_frame_heard_by_two_gateways_reports_both_with_rssi_and_snr():
    r = Radio(seed=3, sites={"n": {"gw-a": 10, "gw-b": 30, "gw-far": 50000}})
    tx = r.transmit("n", CH1, 5, 24, 0)
    assert [x.gateway_id for x in tx.receptions] == ["gw-a", "gw-b"]
    assert tx.losses == {"gw-far": "sensitivity"}
    for x in tx.receptions:
        assert x.snr_db == pytest.approx(x.rssi_dbm - noise_floor_dbm())
        assert x.channel == 1
    assert tx.best().gateway_id == "gw-a"
    assert r.counters["heard"] == 1 and r.counters["receptions"] == 2
    assert r.gateways == ["gw-a", "gw-b", "gw-far"]


def test_overlap_on_the_same_channel_and_sf_loses_the_later_frame():
    sites = {"a": {"g": 20}, "b": {"g": 20}}
    r = Radio(sites=sites, path_loss=EXACT)
    first = r.transmit("a", CH0, 5, 24, 0)
    later = r.transmit("b", CH0, 5, 24, first.end_us - 1)  # overlaps by 1 µs
    assert first.heard and not later.heard and later.losses == {"g": "collision"}
    assert later.collided_with == [("a", 0)]
    assert r.counters["collisions"] == 1 and r.counters["late_interference"] == 1
    # Back to back, another SF, another channel: no collision.
    assert r.transmit("a", CH0, 5, 24, later.end_us).heard
    assert r.transmit("b", CH0, 4, 24, later.end_us + 1000).heard
    assert r.transmit("b", CH1, 5, 24, later.end_us + 1000).heard
    assert r.counters["collisions"] == 1


def test_capture_a_later_frame_six_db_stronger_survives():
    r = Radio(sites={"weak": {"g": at_power(-110)}, "strong6": {"g": at_power(-104)},
                     "strong5": {"g": at_power(-105)}}, path_loss=EXACT)
    weak = r.transmit("weak", CH0, 3, 30, 0)
    strong = r.transmit("strong6", CH0, 3, 30, 5000)
    assert weak.heard and strong.heard
    assert r.counters["captures"] == 1
    r2 = Radio(sites=r.sites, path_loss=EXACT)
    r2.transmit("weak", CH0, 3, 30, 0)
    assert not r2.transmit("strong5", CH0, 3, 30, 5000).heard  # 5 dB is not enough


def test_collision_at_one_gateway_is_not_a_loss_where_the_other_hears_it():
    sites = {"a": {"g1": 20, "g2": 5000}, "b": {"g1": 20, "g2": 30}}
    r = Radio(sites=sites, path_loss=EXACT)
    r.transmit("a", CH2, 5, 24, 0)
    b = r.transmit("b", CH2, 5, 24, 100)
    assert [x.gateway_id for x in b.receptions] == ["g2"] and b.losses == {"g1": "collision"}


def test_jamming_and_outage_windows():
    r = Radio(sites={"n": {"g1": 10, "g2": 10}})
    r.jam(CH0, start_s=10, end_s=20)
    r.jam(CH1, start_s=10, end_s=20, gateways=["g2"])
    r.outage("g1", start_s=30, end_s=40)
    assert r.transmit("n", CH0, 5, 24, int(9.99 * 1e6)).losses == {"g1": "jammed", "g2": "jammed"}
    assert r.transmit("n", CH0, 5, 24, 20 * 1000000).heard  # the window is over
    assert r.transmit("n", CH2, 5, 24, 15 * 1000000).losses == {}
    assert r.transmit("n", CH1, 5, 24, 15 * 1000000 + 100000).losses == {"g2": "jammed"}
    tx = r.transmit("n", CH2, 5, 24, 35 * 1000000)
    assert tx.losses == {"g1": "gateway_down"} and [x.gateway_id for x in tx.receptions] == ["g2"]
    with pytest.raises(ValueError, match="freq_hz"):
        r.jam(869525000, 0)
    off = r.transmit("n", 867100000, 5, 24, 50 * 1000000)
    assert off.losses == {"g1": "off_channel", "g2": "off_channel"}


def test_duty_cycle_violations_are_recorded_not_enforced():
    r = Radio(sites={"n": {"g": 10}})
    toa = airtime.dr_airtime_ms(0, 51)  # SF12, 2793.5 ms: 12 fit in band M's 36 s an hour
    start = 0
    for _ in range(13):
        tx = r.transmit("n", CH0, 0, airtime.app_payload_to_phy(51), start)
        start = tx.end_us + 1000
    assert r.counters["duty_cycle_violations"] == 1 and tx.duty_cycle_violation and tx.heard
    r.transmit("other", CH0, 0, 64, start)  # another node has its own budget
    assert r.counters["duty_cycle_violations"] == 1
    r.transmit("n", CH0, 0, 64, start + 3600 * 1000000 + int(toa * 1000) * 13)
    assert r.counters["duty_cycle_violations"] == 1


def test_same_seed_same_outcome_and_fading_ignores_other_traffic():
    def run(seed, with_b):
        r = Radio(seed=seed, sites={"a": {"g": 200, "h": 120}, "b": {"g": 300}})
        out = []
        for i in range(40):
            if with_b:
                r.transmit("b", CH1, 5, 24, i * 10000000 + 5)
            tx = r.transmit("a", CH0, 5, 24, i * 10000000)
            out.append((tuple(sorted(tx.power_dbm.items())), tuple(x.gateway_id for x in tx.receptions)))
        return out
    assert run(7, False) == run(7, False) == run(7, True)
    assert run(7, False) != run(8, False)


def test_loss_rate_follows_the_model():
    d = at_power(sensitivity_dbm(7) + 3.0)  # 3 dB of margin: P = Phi(3 / 3.57) ~ 0.80
    r = Radio(seed=11, sites={"n": {"g": d}})
    heard = sum(r.transmit("n", CH0, 5, 24, i * 1000000).heard for i in range(2000))
    assert abs(heard / 2000 - reception_probability(d, 7)) < 0.03


def test_node_link_transmits_the_emulators_uplink():
    r = Radio(sites={"70B3D57ED0000001": {"g": 10}})
    link = r.link()
    up = Uplink(dev_eui="70B3D57ED0000001", dev_addr=0x26000001, fcnt=0, port=2, payload=b"\x01\x02",
                dr=5, confirmed=False, airtime_ms=airtime.dr_airtime_ms(5, 2), freq_hz=CH2, t_s=12.5)
    link(up)
    tx, verdict = link.last
    assert tx.heard and tx.tag is up and tx.start_us == 12500000 and verdict is None
    assert tx.airtime_ms == pytest.approx(up.airtime_ms)


def test_bad_configuration_is_a_value_error():
    with pytest.raises(ValueError, match="channels"):
        Radio(channels=[CH0, CH0])
    with pytest.raises(ValueError, match="path_loss"):
        Radio(path_loss={"gamma": 3})
    with pytest.raises(ValueError, match="distance"):
        Radio(sites={"n": {"g": -5}})


def test_collisions_are_decided_in_virtual_start_order_not_in_the_order_frames_are_sent():
    """Two overlapping frames at equal power on one channel: the one that started first is
    heard, the other lost. Sent in reverse (a node running ahead in real time), the earlier
    frame is still decided against the frames before it (none: heard); the later one's
    verdict was given already and is counted in ``out_of_order``."""
    def pair(reverse):
        r = Radio(sites={"early": {"g": 20}, "late": {"g": 20}}, path_loss=EXACT)
        sends = [("early", 1000), ("late", 30000)]
        got = {}
        for node, start in reversed(sends) if reverse else sends:
            got[node] = r.transmit(node, CH0, 5, 24, start)
        return r, got

    r, got = pair(reverse=False)
    assert got["early"].heard and not got["late"].heard
    assert got["late"].losses == {"g": "collision"} and r.counters["out_of_order"] == 0
    r, got = pair(reverse=True)
    assert got["early"].heard and got["early"].collided_with == []
    assert r.counters["out_of_order"] == 1


def test_equal_starts_are_ordered_by_the_seeded_tie_break_and_order_is_consulted_first():
    """Frames starting at the same µs: the one with the smaller ``order_key`` is on air first.
    ``order(node, start_us, key)`` is called before each decision, outside the radio's lock."""
    calls = []
    r = Radio(seed=3, sites={"a": {"g": 20}, "b": {"g": 20}}, path_loss=EXACT)
    r.order = lambda node, start_us, key: calls.append((node, start_us, key))
    first, second = sorted("ab", key=lambda n: r.order_key(n, 0))
    t1 = r.transmit(first, CH1, 5, 24, 5000)
    t2 = r.transmit(second, CH1, 5, 24, 5000)
    assert t1.heard and not t2.heard and t2.collided_with == [(first, 0)]
    assert calls == [(first, 5000, r.order_key(first, 0)), (second, 5000, r.order_key(second, 0))]
    assert r.order_key("a", 0) == Radio(seed=3).order_key("a", 0) != Radio(seed=4).order_key("a", 0)
