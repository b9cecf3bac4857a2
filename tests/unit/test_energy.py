"""The wake-cycle energy model against REFERENCE.md §5: its worked examples A and B (table
"Worked examples [calc], one uplink per 15 min"), the SCD41 single-shot figures, the
self-discharge formula, and what a profile's wake cycle is made of."""

import tomllib

import pytest

from protocol import airtime
from simulators import energy
from simulators.bench_node import PROFILE_DIR

DAY_H = 24.0
ALK, LIFES2, LISOCL2 = (energy.BATTERIES[k] for k in ("aa-alkaline", "aa-lifes2", "d-lisocl2"))


def _profile(name):
    with open(PROFILE_DIR / ("%s.toml" % name), "rb") as f:
        return tomllib.load(f)


def _years(cycle, battery):
    return energy.years(cycle.life_h(battery, self_discharge=False))


def test_worked_example_a_wifi_mqtt():
    # A: 0.3 s @ 40 mA + 2 s @ 120 mA = 252 mAs; 15 µA; 0.295 mA; 282 d / 360 d / 2147 d.
    a = energy.example_a()
    assert a.charge_mas == pytest.approx(252.0)
    assert a.awake_s == pytest.approx(2.3)
    assert a.average_ma == pytest.approx(0.295, abs=5e-4)
    days = [round(a.life_h(b, self_discharge=False) / DAY_H) for b in (ALK, LIFES2, LISOCL2)]
    assert days == [282, 360, 2147]


def test_worked_example_b_lorawan_sf7():
    # B: ESP32 0.5 s @ 40 mA + TX 61.7 ms @ 70 mA + 2 RX windows 50 ms @ 17 mA = 26 mAs;
    # 17 µA; 0.046 mA; ≈ 5 y alkaline, ≈ 6 y Li-FeS2, > 15 y Li-SOCl2 on paper.
    b = energy.example_b()
    tx = [p for p in b.phases if p.name.startswith("LoRa TX")][0]
    assert tx.seconds * 1000 == pytest.approx(61.7, abs=0.05)
    assert b.charge_mas == pytest.approx(26.0, abs=0.05)
    assert b.awake_s == pytest.approx(0.5)
    assert b.average_ma == pytest.approx(0.046, abs=5e-4)
    assert round(_years(b, ALK)) == 5
    assert round(_years(b, LIFES2)) == 6
    assert _years(b, LISOCL2) > 15


def test_worked_example_b_at_sf12():
    # B at SF12: TX 1483 ms; I_avg 0.156 mA; ~1.5 y / ~1.9 y / ~11 y. REFERENCE prints
    # 127 mAs per wake, but its own I_avg (0.156 = q / 900 s + 0.017) implies q = 125.5 mAs,
    # which is what 20 + 1482.8 ms × 70 mA + 1.7 gives: the model matches the I_avg.
    b = energy.example_b(dr=0)
    tx = [p for p in b.phases if p.name.startswith("LoRa TX")][0]
    assert tx.seconds * 1000 == pytest.approx(1482.8, abs=0.05)
    assert b.charge_mas == pytest.approx(125.5, abs=0.05)
    assert b.average_ma == pytest.approx(0.156, abs=5e-4)
    assert _years(b, ALK) == pytest.approx(1.5, abs=0.05)
    assert _years(b, LIFES2) == pytest.approx(1.9, abs=0.05)
    assert _years(b, LISOCL2) == pytest.approx(11.0, abs=0.15)


def test_self_discharge_follows_the_reference_formula():
    # I_self = C × (annual fraction) / 8760 h
    assert LISOCL2.self_discharge_ma == pytest.approx(19000 * 0.01 / 8760)
    b = energy.example_b()
    with_self = b.life_h(LIFES2)
    assert with_self == pytest.approx(LIFES2.usable_mah / (b.average_ma + 3000 * 0.01 / 8760))
    assert with_self < b.life_h(LIFES2, self_discharge=False)


def test_scd41_single_shot_matches_reference_extra_load():
    # "SCD41 single shot every 5 min = 73.6 mAs/shot @ 3.3 V → 5.9 mAh/day + 3.6 mAh/day idle
    # (0.15 mA) ≈ 0.4 mA average"
    phases, idle_ma = energy.sensor_phases({"part": "scd4x", "mode": "single_shot"})
    shot = [p for p in phases if not p.awake][0]
    assert shot.charge_mas == pytest.approx(73.6, abs=0.05)
    assert idle_ma == 0.15
    per_day_mah = shot.charge_mas * 288 / 3600.0
    assert per_day_mah == pytest.approx(5.9, abs=0.05)
    assert (per_day_mah + idle_ma * 24) / 24 == pytest.approx(0.4, abs=0.01)
    # a switched-off rail has no idle current; periodic mode draws 15 mA all the time
    assert energy.sensor_phases({"part": "scd4x", "mode": "single_shot"}, rail_gated=True)[1] == 0.0
    assert energy.sensor_phases({"part": "scd4x", "mode": "periodic"})[1] == 15.0


def _toa_s(app_bytes, sf=7):
    return airtime.time_on_air_ms(airtime.app_payload_to_phy(app_bytes), sf) / 1000.0


def test_legionella_wake_cycle_is_made_of_its_parts():
    prof = _profile("legionella-outlet")
    # as built: a 5-reading uplink every 5 wakes (max_delay_s 3600 // 900 + 1), a status
    # record every 24 wakes in a full 222-byte uplink of its own, the ESP32 light-sleeping
    # through the rail's settle and the TMP117's conversion (its sensor clock naps), and from
    # the modem's acceptance until 50 ms before RX1
    assert energy.batch_wakes(prof) == 5
    c = energy.profile_cycle(prof, "lorawan", 25)
    wake_s = 0.3 + 0.2  # boot + application
    naps_s = 0.02 + 0.125  # rail settle + TMP117 8x, in light sleep
    around_s = 0.02 + 0.05 + 0.05 + 0.1  # quiet UART read, margin, RX1 window, the RAK's linger
    assert c.awake_s == pytest.approx(wake_s + around_s / 5 + around_s / 24)

    def nap_s(app_bytes):
        return _toa_s(app_bytes) + 1.0 - 0.05 - 0.02

    def uplink_mas(app_bytes):
        return _toa_s(app_bytes) * 87.0 + 0.05 * 5.22 + nap_s(app_bytes) * 0.8

    # the rail (and its 10 kOhm bleeder, 0.33 mA) is on from after the boot to the deep sleep
    rail_on_s = c.awake_s - 0.3 + naps_s + nap_s(25) / 5 + nap_s(222) / 24
    assert c.wake_s == pytest.approx(rail_on_s + 0.3)
    expected = 40 * c.awake_s + 0.8 * naps_s + uplink_mas(25) / 5 + uplink_mas(222) / 24 + 0.33 * rail_on_s
    assert c.charge_mas == pytest.approx(expected)
    # bare module: ESP32 10 + regulator 5 + divider 1.5 + RAK3172 1.69 µA
    assert c.sleep_ua == pytest.approx(18.19)
    assert c.interval_s == 900
    # the firmware before: an uplink every wake, the ESP32 awake from the command through
    # RECEIVE_DELAY1, the RX1 window and the driver's linger, and through the sensor's waits
    before = energy.profile_cycle(prof, "lorawan", 15, 1, wait="awake", status=False, nap=False)
    assert before.awake_s == pytest.approx(wake_s + naps_s + _toa_s(15) + 1.0 + 0.05 + 0.1)


def test_the_model_uses_the_firmware_timings():
    from drivers.atmodem import ATModem
    from firmware.app.links.lorawan import NAP_MARGIN_MS, RX1_DELAY_MS
    from simulators.clock import VirtualClock

    assert energy.NAP_MARGIN_S * 1000 == NAP_MARGIN_MS and energy.RECEIVE_DELAY1_S * 1000 == RX1_DELAY_MS
    assert energy.MODULES["rak3172"].linger_s * 1000 == ATModem(None, VirtualClock()).rx_linger_ms
    # light sleep and its awake part cover exactly the time the ESP32 used to wait awake
    m = energy.MODULES["rak3172"]
    for confirmed in (True, False):
        awake = energy.lorawan_phases(40, 5, m, confirmed, "awake")
        light = energy.lorawan_phases(40, 5, m, confirmed, "light")
        assert sum(p.seconds for p in light[2:]) == pytest.approx(awake[2].seconds)
        assert light[2].ma == energy.ESP32_LIGHT_SLEEP_MA and not light[2].awake
    assert light[3].seconds == pytest.approx(0.02 + 0.05 + 0.05 + 1.0 + 0.1)  # unconfirmed: awake to RX2


def test_batching_follows_max_delay_s():
    legionella, bins = _profile("legionella-outlet"), _profile("bin-level")
    assert energy.batch_wakes(bins) == 3  # 3600 // 1800 + 1
    unbatched = dict(legionella, link={"lorawan": dict(legionella["link"]["lorawan"], max_delay_s=0)})
    assert energy.batch_wakes(unbatched) == 1
    tx = [p for p in energy.profile_cycle(legionella, "lorawan", 25).phases if p.name.startswith("LoRa TX")]
    assert tx[0].share == pytest.approx(1 / 5.0)
    assert energy.batch_wakes(legionella, interval_s=300) == 13  # the batch grows with a shorter interval


def test_uplinks_shared_over_the_wakes_that_fill_them():
    prof = _profile("legionella-outlet")
    one = energy.profile_cycle(prof, "lorawan", 15, 1, wait="none", status=False)
    twelve = energy.profile_cycle(prof, "lorawan", 15, readings_per_uplink=12, wait="none", status=False)
    link = sum(p.charge_mas for p in one.phases if p.name.startswith("LoRa"))
    assert one.charge_mas - twelve.charge_mas == pytest.approx(link * 11 / 12)
    # street NO2 logs a 15-min mean every 15 one-minute wakes: one uplink per 15 wakes
    street = energy.profile_cycle(_profile("street-no2"), "lorawan", 17)
    tx = [p for p in street.phases if p.name.startswith("LoRa TX")][0]
    assert tx.share == pytest.approx(60 / 900.0)
    assert not any(p.name == "ESP32 boot" for p in street.phases)  # light sleep: no boot


def test_wait_modes_and_links():
    m = energy.MODULES["rak3172"]
    awake = energy.lorawan_phases(20, 5, m, wait="awake")
    light = energy.lorawan_phases(20, 5, m, wait="light")
    none = energy.lorawan_phases(20, 5, m, wait="none")
    charge = [sum(p.charge_mas for p in ph) for ph in (awake, light, none)]
    assert charge[0] > charge[1] > charge[2]
    assert [p.awake for p in none] == [False, False]
    # an unconfirmed uplink opens both windows and ends after RX2
    unc = energy.lorawan_phases(20, 5, m, confirmed=False)
    assert unc[1].seconds == pytest.approx(0.1) and unc[2].seconds > awake[2].seconds + 0.99
    assert energy.mqtt_phases(tls=True)[0].seconds == 3.0
    assert energy.serial_phases(1152)[0].seconds == pytest.approx(0.1)
    with pytest.raises(ValueError, match="wait"):
        energy.lorawan_phases(20, 5, m, wait="doze")
    with pytest.raises(ValueError, match="link"):
        energy.profile_cycle(_profile("bin-level"), "zigbee", 10)


def test_unknown_parts_and_settings_are_refused():
    with pytest.raises(ValueError, match="averaging"):
        energy.sensor_phases({"part": "tmp117", "averaging": 32})
    with pytest.raises(ValueError, match="part"):
        energy.sensor_phases({"part": "sht41"})
    with pytest.raises(ValueError, match="build"):
        energy.sleep_current_ua("deep", "breadboard")
    with pytest.raises(ValueError, match="positive"):
        energy.battery_life_h(0.0, LIFES2, self_discharge=False)
    with pytest.raises(ValueError, match="interval_s"):
        energy.Cycle([], 0, 10.0)


def test_sleep_builds():
    rak = energy.MODULES["rak3172"]
    assert energy.sleep_current_ua("deep", "module", rak) == pytest.approx(10 + 5 + 1.5 + 1.69)
    assert energy.sleep_current_ua("deep", "devboard") == pytest.approx(1010.0)
    assert energy.sleep_current_ua("light", "devboard") == pytest.approx(1800.0)


def test_interval_for_life_is_the_shortest_that_lasts():
    prof = _profile("legionella-outlet")
    c = energy.profile_cycle(prof, "lorawan", 35, readings_per_uplink=12, wait="light")
    need = energy.interval_for_life(c, LIFES2, 5.0)
    at = energy.Cycle(c.phases, need, c.sleep_ua, c.continuous_ma)
    before = energy.Cycle(c.phases, need - 1, c.sleep_ua, c.continuous_ma)
    assert energy.years(at.life_h(LIFES2)) >= 5.0 > energy.years(before.life_h(LIFES2))
    # a dev board's sleep current alone drains 2×AA in well under 5 years: no interval helps
    dev = energy.profile_cycle(prof, "lorawan", 15, build="devboard")
    assert energy.interval_for_life(dev, LIFES2, 5.0) == float("inf")
