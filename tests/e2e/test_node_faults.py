"""RELIABILITY.md's I2C and sensor faults, injected on the simulated parts while the real node
firmware (`civicedge firmware build`, run by simulators/mpy/board.py in the MicroPython unix
port) reads them through deep-sleep wakes; every assertion is on what the gateway stub received
over the serial link — the readings' values and quality flags, and the counters of the status
record the node sends every wake — and on the simulated parts' own counters.

Fault windows are in the simulator's monotonic seconds. With ``--rtc-synced`` a record's ``t``
is the simulator's wall time at the start of its wake, so each reading is placed against a
window by its own timestamp (the sample is taken within a few seconds of ``t``); readings too
close to a window's edge to say are not asserted on.
"""

import pytest

from protocol import quality
from simulators.i2c_server import SimServer
from tests.e2e.nodeharness import (
    KEY, ROOM, ROOMY_HEAP, SCD41, LinkStub, build_node, finish, kind, node_config, run_node, start_node,
    wait_for)

TMP117 = 0x48
SONAR = 0x70
INTERVAL_S = 60
# Wake k starts at about 6 + 65.8 k s (60 s asleep; awake ~6 s: the SCD41's first periodic
# sample after start_periodic_measurement takes 5 s). Windows start 25 s before a wake.
PERIOD_S = 66
SAMPLE_BEFORE_S, SAMPLE_AFTER_S = 1, 8  # where the sample lies around a reading's t
HEAP = ROOMY_HEAP["heapsize"]


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    return build_node(tmp_path_factory.mktemp("faults") / "flash",
                      sets=["interval_s=%d" % INTERVAL_S, "status_every_n_cycles=1"])


def window(first_wake, end_wake, period=PERIOD_S):
    """(start_s, end_s) covering wakes first_wake .. end_wake - 1."""
    return first_wake * period - 25.0, end_wake * period - 25.0


class Outcome:
    """What came out of a faulted run: ``readings`` [(t_mono, {quantity: (value, flag)})],
    ``statuses`` [(t_mono, counters, {quantity: (value, flag)})], the devices' counters by
    address and the bus's, the run."""

    def __init__(self, run, records, offset, devices, bus):
        self.run = run
        self.readings, self.statuses = [], []
        for d, e, r in records:
            t = None if r["t"] is None else r["t"] - offset
            if kind(r) == "reading":
                self.readings.append((t, {q: (v, f) for q, v, f in r["values"]}))
            elif kind(r) == "status":
                self.statuses.append((t, r["counters"], {q: (v, f) for q, v, f in r["values"]}))
        self.devices = devices
        self.bus = bus

    @property
    def counters(self):
        """The node's counters as its last status record reported them."""
        return self.statuses[-1][1]

    def inside(self, win):
        a, b = win
        return [v for t, v in self.readings if t - SAMPLE_BEFORE_S >= a and t + SAMPLE_AFTER_S <= b]

    def outside(self, *wins):
        return [v for t, v in self.readings
                if all(t + SAMPLE_AFTER_S < a or t - SAMPLE_BEFORE_S > b for a, b in wins)]

    def after(self, win):
        return [v for t, v in self.readings if t - SAMPLE_BEFORE_S > win[1]]


def run_faulted(build, tmp_path, wakes, faults=(), devices=None, bus=None, analog=None, during=None):
    """Run the node for ``wakes`` with ``faults`` [(address or None, Fault spec)] on the rig.
    ``during(srv, gw, proc)``: act while it runs (under the server's lock)."""
    devices = devices or [{"model": "scd4x", "address": SCD41, "truth": ROOM, "seed": 21}]
    with SimServer() as srv, LinkStub({node_config(build)["device_id"]: KEY}) as gw:
        srv.rig.setup(devices, bus=dict({"timeout_ms": 200}, **(bus or {})))
        srv.analog.update(analog or {})
        offset = srv.rig.clock.wall_s() - srv.rig.now_s()
        for address, spec in faults:
            srv.rig.fault(address, spec)
        image = tmp_path / "flash.img"
        if during is None:
            run = run_node(build, image, gw, srv, wakes, heapsize=HEAP, extra=["--rtc-synced"])
        else:
            proc = start_node(build, image, gw, srv, wakes, heapsize=HEAP, extra=["--rtc-synced"])
            try:
                during(srv, gw, proc)
            except BaseException:
                proc.kill()
                proc.communicate()
                raise
            run = finish(proc)
        with srv.lock:
            devs = {d["address"]: srv.rig.counters(d["address"]) for d in devices}
            bus_counters = srv.rig.counters(None)
        records = gw.unique_records()
        assert gw.counters["bad_frames"] == 0 and gw.counters["bad_packs"] == 0, gw.counters
    s = run.summary
    assert s is not None and s["end"] == "wakes" and s["resets"]["wdt"] == 0, run.text()
    assert "Traceback" not in run.out + run.err, run.text()
    out = Outcome(run, records, offset, devs, bus_counters)
    assert len(out.readings) == wakes + 1 and len(out.statuses) == wakes + 1, (len(out.readings), run.text())
    return out


# The SCD41's accuracy (REFERENCE §1): CO2 ±(50 ppm + 2.5 %) at 400-1000 ppm, T ±0.8 °C, RH ±6 %RH
SCD41_ACCURACY = {"co2_ppm": 50 + 0.025 * ROOM["co2_ppm"], "temperature_c": 0.8, "rh_percent": 6.0}


def scd41_ok(values):
    """All three quantities flagged ok and within the SCD41's accuracy of the truth."""
    return all(values[q][1] == quality.OK and abs(values[q][0] - ROOM[q]) <= SCD41_ACCURACY[q] for q in ROOM)


def failed(values, quantities=("co2_ppm", "temperature_c", "rh_percent")):
    return all(values[q] == (None, quality.SENSOR_FAILED) for q in quantities)


def test_nack_bounded_retries_then_sensor_failed_then_recovery(classroom, tmp_path):
    win = window(3, 6)
    out = run_faulted(classroom, tmp_path, 9, [(SCD41, {"kind": "nack", "start_s": win[0], "end_s": win[1]})])
    inside = out.inside(win)
    assert len(inside) >= 2 and all(failed(v) for v in inside), inside  # no value invented
    assert all(scd41_ok(v) for v in out.outside(win)), out.readings
    assert len(out.after(win)) >= 2 and all(scd41_ok(v) for v in out.after(win))  # it recovers
    c = out.counters
    wire = out.devices[SCD41]["nacks"]
    failures = sum(1 for t, v in out.readings if failed(v))
    assert c["sensor_failures"] == failures >= len(inside)
    assert c["nacks"] == wire > 0  # every NACK on the wire was seen and counted
    # bounded: per failed wake at most 2 attempts to prepare the part (boot, then the cycle),
    # each the first try plus 3 retries
    assert wire <= failures * 2 * 4, (wire, failures)


def test_crc_flips_are_retried_counted_and_never_reach_a_value(classroom, tmp_path):
    win = window(2, 9)
    out = run_faulted(classroom, tmp_path, 10, [(SCD41, {"kind": "crc_flip", "start_s": win[0], "end_s": win[1],
                                                         "probability": 0.3})])
    flips = out.devices[SCD41]["crc_flips"]
    c = out.counters
    assert flips > 0 and c["crc_errors"] == flips, (flips, c)  # each flip detected, each counted
    # a corrupted word never becomes a value: every reading is within spec or sensor_failed
    for t, v in out.readings:
        assert scd41_ok(v) or failed(v), v
    inside = out.inside(win)
    recovered = [v for v in inside if scd41_ok(v)]
    assert recovered, "no reading inside the window survived its CRC errors by the retry"
    assert c["crc_errors"] > c["sensor_failures"]  # some errors were absorbed by the retry


def test_stuck_bus_fails_the_sensor_counts_timeouts_and_recovers_when_it_clears(classroom, tmp_path):
    win = window(3, 5)
    out = run_faulted(classroom, tmp_path, 8, [(None, {"kind": "stuck_bus", "start_s": win[0], "end_s": win[1]})])
    inside = out.inside(win)
    assert inside and all(failed(v) for v in inside), inside
    assert all(scd41_ok(v) for v in out.outside(win))
    assert len(out.after(win)) >= 2
    c = out.counters
    assert c["timeouts"] == out.bus["timeouts"] > 0, (c, out.bus)
    assert c["sensor_failures"] == sum(1 for t, v in out.readings if failed(v))
    assert "rail_cycles" not in c  # the classroom's SCD41 is not on a switched rail: nothing to cycle


def test_a_slave_holding_sda_is_freed_by_nine_clocks_and_nothing_is_lost(classroom, tmp_path):
    # A recoverable stuck bus with no end: only the firmware's recovery (nine SCL pulses as a
    # GPIO, then STOP — the I2C-bus specification's) clears it, as on a real bus.
    win = window(3, 4)
    out = run_faulted(classroom, tmp_path, 6, [(None, {"kind": "stuck_bus", "start_s": win[0], "recoverable": True})])
    assert len(out.readings) >= 6 and all(scd41_ok(v) for t, v in out.readings), out.readings
    c = out.counters
    assert c["bus_recoveries"] >= 1 and c["timeouts"] == out.bus["timeouts"] >= 1, (c, out.bus)
    assert out.bus["recoveries"] == c["bus_recoveries"]
    assert c["sensor_failures"] == 0


def test_clock_stretching_shorter_than_the_timeout_is_no_failure(classroom, tmp_path):
    out = run_faulted(classroom, tmp_path, 4, [(SCD41, {"kind": "stretch", "magnitude": 150.0})])
    assert all(scd41_ok(v) for t, v in out.readings), out.readings
    assert out.counters["timeouts"] == 0 and out.counters["sensor_failures"] == 0 and out.bus["timeouts"] == 0


def test_stuck_value_is_flagged_after_stuck_n_identical_readings(classroom, tmp_path):
    stuck_n = node_config(classroom)["quality"]["co2_ppm"]["stuck_n"]
    win = (window(2, 3)[0], None)
    out = run_faulted(classroom, tmp_path, 2 + stuck_n + 3,
                      [(SCD41, {"kind": "stuck_value", "start_s": win[0], "quantity": "co2_ppm"})])
    co2 = [v["co2_ppm"] for t, v in out.readings]
    held = [v["co2_ppm"] for v in out.inside((win[0], float("inf")))]
    assert len(held) >= stuck_n + 2 and len(set(x for x, f in held)) == 1, held  # the part repeats itself
    # the flag follows the run length of identical values: stuck from the stuck_n-th on
    run = 0
    for i, (value, flag) in enumerate(co2):
        run = run + 1 if i and value == co2[i - 1][0] else 1
        assert flag == (quality.STUCK if run >= stuck_n else quality.OK), (i, run, co2)
    assert co2[-1][1] == quality.STUCK
    assert all(v["temperature_c"][1] == v["rh_percent"][1] == quality.OK for t, v in out.readings)


def test_a_spike_is_flagged_and_the_next_reading_is_ok_again(classroom, tmp_path):
    win = window(4, 5)
    jump = 2500.0  # > the classroom's max_step for CO2 (1500 ppm)
    out = run_faulted(classroom, tmp_path, 7, [(SCD41, {"kind": "spike", "start_s": win[0], "end_s": win[1],
                                                        "magnitude": jump, "quantity": "co2_ppm"})])
    inside = out.inside(win)
    assert len(inside) == 1, out.readings
    value, flag = inside[0]["co2_ppm"]
    # the raw value is kept: truth + jump, within the datasheet's ±(40 ppm + 5 %) (REFERENCE §1, v1.1)
    assert flag == quality.SPIKE and abs(value - ROOM["co2_ppm"] - jump) <= 50 + 0.05 * (ROOM["co2_ppm"] + jump)
    assert all(scd41_ok(v) for v in out.outside(win)) and len(out.after(win)) >= 2


def test_out_of_range_keeps_the_raw_value_with_its_flag(classroom, tmp_path):
    win = window(3, 5)
    hi = node_config(classroom)["quality"]["temperature_c"]["hi"]
    out = run_faulted(classroom, tmp_path, 7, [(SCD41, {"kind": "spike", "start_s": win[0], "end_s": win[1],
                                                        "magnitude": 40.0, "quantity": "temperature_c"})])
    inside = out.inside(win)
    assert len(inside) >= 1
    for v in inside:
        value, flag = v["temperature_c"]
        assert flag == quality.OUT_OF_RANGE and value > hi, v  # kept raw, flagged
        assert v["co2_ppm"][1] == v["rh_percent"][1] == quality.OK  # the other quantities unaffected
    assert all(scd41_ok(v) for v in out.outside(win)) and len(out.after(win)) >= 2


def test_power_on_garbage_is_flagged_not_passed_as_a_reading(classroom, tmp_path):
    """The sensor alone browns out mid-run (its rail glitches; the node keeps its RTC memory):
    its first sample after power-up is garbage with a valid CRC."""
    rules = node_config(classroom)["quality"]
    box = {}

    def brownout(srv, gw, proc):
        got = wait_for(lambda: sum(1 for d, e, r in gw.records if kind(r) == "reading") >= 3, 60, proc)
        assert got, "the node sent nothing"
        with srv.lock:
            srv.rig.fault(SCD41, {"kind": "power_on_garbage"})
            srv.rig.power(SCD41, "cycle")
            box["at"] = srv.rig.now_s()

    out = run_faulted(classroom, tmp_path, 10, during=brownout)
    after = [v for t, v in out.readings if t > box["at"] and not failed(v)]
    assert len(after) >= 3, out.readings
    garbage = after[0]
    assert not scd41_ok(garbage), "the first sample after the brownout was not garbage: %s" % garbage
    flagged = 0
    for q, (value, flag) in garbage.items():
        truth = ROOM[q]
        rule = rules[q]
        assert value is not None  # the raw value is kept
        if not rule["lo"] <= value <= rule["hi"]:
            assert flag == quality.OUT_OF_RANGE, (q, value, flag)
        elif abs(value - truth) > rule["max_step"] + SCD41_ACCURACY[q]:
            assert flag == quality.SPIKE, (q, value, flag)  # a jump no room makes in one interval
        flagged += flag != quality.OK
    assert flagged, "garbage passed as ok: %s" % garbage
    assert all(scd41_ok(v) for v in after[2:])


# -- two sensors: one failing never stops the other ------------------------------------------------
BIN_TRUTH = {"distance_cm": 70.0, "temperature_c": 15.0}
BIN_PERIOD_S = 61  # 60 s asleep, ~1 s awake (rail 250 ms, five pings 100 ms apart, one TMP117 conversion)


@pytest.fixture(scope="module")
def bin_level(tmp_path_factory):
    """The bin-level profile (an I2CXL sonar and a TMP117 for its speed-of-sound correction) is
    LoRaWAN-only; its board's UART carries the serial link here instead (``--set link.type=serial``,
    modem and LoRaWAN sections dropped), so the same gateway stub can read it."""
    return build_node(tmp_path_factory.mktemp("bin") / "flash", profile="bin-level", board="esp32-devkitc-rak3272s",
                      link=None, device_id="ward3-bin-0042",
                      sets=["link.type=serial", "link.modem=null", "link.lorawan=null", "interval_s=%d" % INTERVAL_S,
                            "status_every_n_cycles=1"])


def test_one_failing_sensor_never_stops_the_other(bin_level, tmp_path):
    air_down = window(2, 4, BIN_PERIOD_S)
    sonar_down = window(6, 8, BIN_PERIOD_S)
    out = run_faulted(
        bin_level, tmp_path, 10,
        [(TMP117, {"kind": "nack", "start_s": air_down[0], "end_s": air_down[1]}),
         (SONAR, {"kind": "nack", "start_s": sonar_down[0], "end_s": sonar_down[1]})],
        devices=[{"model": "i2cxl", "address": SONAR, "truth": BIN_TRUTH, "seed": 3},
                 {"model": "tmp117", "address": TMP117, "truth": BIN_TRUTH, "seed": 4}],
        analog={"35": 1.5})  # 3.0 V of battery through the 1:2 divider

    def sonar_ok(v):
        d, f = v["distance_cm"]
        return f == quality.OK and abs(d - BIN_TRUTH["distance_cm"]) <= 2.0 and v["fill_ratio"][1] == quality.OK

    def air_ok(v):
        t, f = v["temperature_c"]
        return f == quality.OK and abs(t - BIN_TRUTH["temperature_c"]) <= 0.1  # TMP117 ±0.1 °C (REFERENCE §2)

    air_failed = out.inside(air_down)
    assert air_failed and all(failed(v, ("temperature_c",)) for v in air_failed), air_failed
    assert all(sonar_ok(v) for v in air_failed), "the sonar stopped with the TMP117: %s" % air_failed
    sonar_failed = out.inside(sonar_down)
    assert sonar_failed and all(failed(v, ("distance_cm", "fill_ratio")) for v in sonar_failed), sonar_failed
    assert all(air_ok(v) for v in sonar_failed), "the TMP117 stopped with the sonar: %s" % sonar_failed
    for v in out.outside(air_down, sonar_down):
        assert sonar_ok(v) and air_ok(v), v
    c = out.counters
    assert c["nacks"] == out.devices[TMP117]["nacks"] + out.devices[SONAR]["nacks"] > 0
    assert c["sensor_failures"] == sum(1 for t, v in out.readings if v["temperature_c"][0] is None) + sum(
        1 for t, v in out.readings if v["distance_cm"][0] is None)


def test_battery_voltage_is_reported_as_measured(bin_level, tmp_path):
    """The status record's battery_v: 2xAA lithium at 3.2 V through the board's 1:2 divider
    puts 1.6 V on GPIO35. The ESP32's ADC with its default 0 dB attenuation reads at most
    ~1 V (ESP-IDF ``driver/adc.h``; docs/simulator-board.md "ADC": the shim clips at 1.1 V), so
    the pin must be read with 11 dB attenuation to see it."""
    out = run_faulted(bin_level, tmp_path, 1, devices=[
        {"model": "i2cxl", "address": SONAR, "truth": BIN_TRUTH, "seed": 3},
        {"model": "tmp117", "address": TMP117, "truth": BIN_TRUTH, "seed": 4}], analog={"35": 1.6})
    for t, c, v in out.statuses:
        volts, flag = v["battery_v"]
        assert flag == quality.OK and abs(volts - 3.2) <= 0.05, (
            "FIRMWARE BUG (main.py _battery_reader): battery_v %r for a 3.2 V battery: machine.ADC(Pin(35)) "
            "without atten=ADC.ATTN_11DB clips the divided voltage at the 0 dB full scale" % volts)


def bin_devices():
    return [{"model": "i2cxl", "address": SONAR, "truth": BIN_TRUTH, "seed": 3},
            {"model": "tmp117", "address": TMP117, "truth": BIN_TRUTH, "seed": 4}]


def test_a_bus_still_stuck_after_nine_clocks_gets_the_sensor_rail_power_cycled(bin_level, tmp_path):
    """RELIABILITY.md: "SDA stuck low / bus timeout: bus recovery (9 clocks + STOP), then
    power-cycle the sensor rail". The bin-level node gates its rail (the harness starts the
    board with ``--rail``: the firmware's rail pin switches the simulated parts' power). Here a
    part holds SDA low until it loses power (``released_by_power``: wedged mid-byte, deaf to the
    nine clocks), from 25 s before wake 3 (the rail is off in deep sleep, so the hold begins as
    the parts power up at that wake). That wake times out, the nine clocks do not help, the
    firmware power-cycles the rail once (off ``rail.off_ms``, on, settle), the holder lets go
    with its power, and both parts, back in their power-on state, are brought up and read in
    the same wake: every reading inside the fault's window is ok, no wake after needs a cycle."""
    cfg = node_config(bin_level)
    assert cfg["rail"]["off_ms"] == 5000 and cfg["power"]["sleep"] == "deep"
    win = (BIN_PERIOD_S * 3 - 25.0, BIN_PERIOD_S * 5 - 25.0)  # wakes 3 and 4 (wake 3 ~6 s longer: the rail)
    fault = {"kind": "stuck_bus", "start_s": win[0], "end_s": win[1], "released_by_power": True}
    out = run_faulted(bin_level, tmp_path, 8, [(None, fault)], devices=bin_devices(), analog={"35": 1.5})

    def both_ok(v):
        return (v["temperature_c"][1] == quality.OK and abs(v["temperature_c"][0] - BIN_TRUTH["temperature_c"]) <= 0.1
                and v["distance_cm"][1] == quality.OK and abs(v["distance_cm"][0] - BIN_TRUTH["distance_cm"]) <= 2.0)

    inside = out.inside(win)
    assert len(inside) >= 1 and all(both_ok(v) for v in inside), out.readings  # recovered inside the window
    assert all(both_ok(v) for t, v in out.readings), out.readings  # no wake lost a reading
    c = out.counters
    # one power-cycle, in the wake the hold began, after a bus recovery that did not help
    assert c["rail_cycles"] == 1 and c["sensor_failures"] == 0, (c, out.readings)
    assert c["bus_recoveries"] >= 1 and out.bus["recoveries"] == c["bus_recoveries"]
    assert c["timeouts"] == out.bus["timeouts"] >= 1
    cycled = [t for t, cc, v in out.statuses if cc.get("rail_cycles")]
    assert cycled and win[0] <= cycled[0] - SAMPLE_BEFORE_S and cycled[0] + SAMPLE_AFTER_S <= win[1], (cycled, win)


def test_a_stuck_bus_the_nine_clocks_free_never_cycles_the_rail(bin_level, tmp_path):
    win = (BIN_PERIOD_S * 2 - 25.0, None)
    out = run_faulted(bin_level, tmp_path, 4, [(None, {"kind": "stuck_bus", "start_s": win[0], "recoverable": True})],
                      devices=bin_devices(), analog={"35": 1.5})
    c = out.counters
    assert c["bus_recoveries"] >= 1 and c["rail_cycles"] == 0 and c["sensor_failures"] == 0, c
    assert all(v["temperature_c"][1] == quality.OK and v["distance_cm"][1] == quality.OK for t, v in out.readings)


def test_a_battery_node_light_sleeps_through_its_sensors_waits(bin_level, tmp_path):
    """The deep-sleeping node's sensor clock naps (``app.clock.NappingClock``): every wake the
    rail's settle (250 ms), the TMP117's conversion (8x averaging, ~125 ms) and the sonar's
    five pings (80 ms to each echo, 100 ms ring-down between) are spent in
    ``machine.lightsleep``, as ``simulators/energy.py`` models it; ``nap_ms`` counts them."""
    out = run_faulted(bin_level, tmp_path, 3, devices=bin_devices(), analog={"35": 1.5})
    naps = [c["nap_ms"] for t, c, v in out.statuses]
    per_wake = [b - a for a, b in zip(naps, naps[1:])]
    least = 250 + 125 + 4 * 100 + 80  # settle, conversion, the rings between pings and the last echo
    assert naps[0] >= least and all(least <= n <= 1500 for n in per_wake), naps
