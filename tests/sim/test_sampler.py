"""The firmware's sampler (firmware/app/sensors.py) built from each profile's real node
configuration, reading simulated parts that measure the environment models: values within
datasheet accuracy and flagged ok; a failing part is flagged sensor_failed and isolated."""

import pytest

from civicedge import firmware_build as fb
from firmware.app import config as node_config
from firmware.app.sensors import Sampler, build_sensors
from protocol import quality
from simulators.ads1115 import SimADS1115
from simulators.clock import VirtualClock
from simulators.daysim import ACCURACY
from simulators.environment import ClassroomCO2, PipeOutlet, StreetBin, StreetNO2
from simulators.faults import Fault
from simulators.i2c import SimI2CBus
from simulators.i2cxl import SimMaxSonar
from simulators.scd4x import SimSCD4X
from simulators.tmp117 import SimTMP117

ENVIRONMENTS = {"classroom-co2": ClassroomCO2, "legionella-outlet": PipeOutlet,
                "bin-level": StreetBin, "street-no2": StreetNO2}


def node(profile, seed=1):
    board, cfg = fb.reference_config(fb.load_profile(profile))
    clock = VirtualClock()
    bus = SimI2CBus(clock, timeout_ms=cfg["i2c"][0]["timeout_us"] / 1000)
    env = ENVIRONMENTS[profile](seed=seed)
    sims = {}
    for s in cfg["sensors"]:
        if s["part"] == "scd4x":
            sims[s["name"]] = bus.attach(SimSCD4X(s["address"], truth=env.at, seed=seed))
        elif s["part"] == "tmp117":
            sims[s["name"]] = bus.attach(SimTMP117(s["address"], truth=env.at, seed=seed))
        elif s["part"] == "i2cxl":
            sims[s["name"]] = bus.attach(SimMaxSonar(s["address"], truth=env.at, seed=seed))
        elif s["part"] == "ads1115":
            adc = bus.attach(SimADS1115(s["address"], inputs={"electrode": {}, "we": 0, "ae": 1},
                                        truth=env.at, seed=seed))
            fb.apply_calibration(cfg, adc.electrode_sheet)
            sims[s["name"]] = adc
    cfg = node_config.validate(cfg, profile)
    clock.sleep_ms(1000)  # the parts' power-up
    sampler = Sampler(build_sensors(cfg["sensors"], {0: bus}, clock), clock, cfg["quality"])
    sampler.prepare()
    return cfg, clock, env, sims, sampler


def cycle(cfg, clock, sampler):
    clock.sleep_ms(cfg["interval_s"] * 1000)
    return sampler.sample()


@pytest.mark.parametrize("profile", sorted(ENVIRONMENTS))
def test_a_few_hours_of_cycles_read_the_truth_and_flag_ok(profile):
    cfg, clock, env, sims, sampler = node(profile)
    n = max(6, 4 * 3600 // cfg["interval_s"])
    checked = 0
    for _ in range(n):
        values = cycle(cfg, clock, sampler)
        truth = env.at(clock.wall_s())
        for q, v, flag in values:
            assert flag in (quality.OK, quality.SPIKE), (q, v, flag)
            key = (profile, q)
            if key in ACCURACY and q in truth and flag == quality.OK and not truth.get("lid_open"):
                band = ACCURACY[key][0](truth[q])
                if profile == "bin-level" and q == "distance_cm":
                    continue  # the lid and the part's minimum range: see daysim's BinNode
                assert abs(v - truth[q]) <= band + (0.5 if q == "co2_ppm" else 0), (q, v, truth[q], band)
                checked += 1
    assert checked >= n  # every cycle was compared with the truth
    assert sampler.counters == {"nacks": 0, "crc_errors": 0, "timeouts": 0, "bus_recoveries": 0,
                                "sensor_failures": 0}


def test_a_failing_part_is_flagged_and_the_others_keep_reporting():
    cfg, clock, env, sims, sampler = node("street-no2")
    sims["air"].add_fault(Fault("nack", start_s=clock.monotonic_s() + 1))
    values = {q: (v, f) for q, v, f in cycle(cfg, clock, sampler)}
    # the NO2 correction needs the air temperature: both are sensor_failed, nothing invented
    assert values["temperature_c"] == (None, quality.SENSOR_FAILED)
    assert values["no2_ppb"] == (None, quality.SENSOR_FAILED)
    assert sampler.counters["nacks"] >= 1 and sampler.counters["sensor_failures"] == 2


def test_a_nack_burst_is_retried_and_a_stuck_bus_is_not():
    cfg, clock, env, sims, sampler = node("legionella-outlet")
    t = clock.monotonic_s() + cfg["interval_s"]
    sims["pipe"].add_fault(Fault("nack", start_s=t, end_s=t + 0.02))  # 20 ms: the backoff rides it out
    (q, v, flag), = cycle(cfg, clock, sampler)
    assert flag == quality.OK and sampler.counters["nacks"] >= 1
    t = clock.monotonic_s() + cfg["interval_s"]
    sims["pipe"].bus.add_fault(Fault("stuck_bus", start_s=t, end_s=t + 60))
    (q, v, flag), = cycle(cfg, clock, sampler)
    assert (v, flag) == (None, quality.SENSOR_FAILED)
    assert sampler.counters["timeouts"] == 1
    (q, v, flag), = cycle(cfg, clock, sampler)  # the bus came back: prepared again, reading again
    assert flag == quality.OK and v is not None


def test_checker_memory_survives_a_deep_sleep_through_its_snapshot():
    cfg, clock, env, sims, sampler = node("classroom-co2")
    sims["co2"].add_fault(Fault("stuck_value", quantity="co2_ppm"))
    flags = []
    snap = None
    for _ in range(12):
        s = Sampler(sampler.sensors, clock, cfg["quality"], checker_state=snap)  # a fresh boot
        s.prepared = sampler.prepared
        values = cycle(cfg, clock, s)
        flags.append(values[0][2])
        snap = s.checker_state()
    assert flags[-1] == quality.STUCK and flags[0] == quality.OK


def test_a_recoverable_stuck_bus_is_recovered_once_and_the_read_retried():
    cfg, clock, env, sims, sampler = node("legionella-outlet")
    bus = sims["pipe"].bus
    t = clock.monotonic_s() + cfg["interval_s"]
    bus.add_fault(Fault("stuck_bus", start_s=t, recoverable=True))  # no end: only recovery clears it
    sampler.recover_bus = lambda bus_id: bus.recover()  # what main.py's nine clocks do
    (q, v, flag), = cycle(cfg, clock, sampler)
    assert flag == quality.OK and v is not None
    assert sampler.counters["timeouts"] == 1 and sampler.counters["bus_recoveries"] == 1
    assert bus.counters["recoveries"] == 1


# Bus transactions of one cycle once the parts are prepared (each is a round trip to the
# sensor server in the fleet simulation): NO2 two single-shot conversions of 3 (Config write,
# Config read where the pointer is, pointer and result in one) and the TMP117's one-shot (a
# write, then pointer and result in one); the sonar 5 pings of 2; the SCD41's waiting sample
# (command, read).
@pytest.mark.parametrize("profile,per_cycle", [("street-no2", 8), ("legionella-outlet", 2),
                                               ("bin-level", 12), ("classroom-co2", 2)])
def test_a_cycle_costs_few_bus_transactions(profile, per_cycle):
    cfg, clock, env, sims, sampler = node(profile)
    bus = next(iter(sims.values())).bus
    cycle(cfg, clock, sampler)
    n = bus.counters["transactions"]
    values = cycle(cfg, clock, sampler)
    assert bus.counters["transactions"] - n == per_cycle
    assert all(f == quality.OK for q, v, f in values), values


def test_a_boot_prepares_the_tmp117_in_a_few_transactions():
    cfg, clock, env, sims, sampler = node("legionella-outlet")  # prepared at its "boot"
    bus = sims["pipe"].bus
    # Device_ID (a register read: pointer and result in one), Temp_Offset (write),
    # Configuration from the EEPROM's continuous 8x to shutdown (read, write), then the
    # one-shot (write) and the result (read)
    assert bus.counters["transactions"] == 1 + 1 + 2
    (q, v, flag), = sampler.sample()
    assert bus.counters["transactions"] == 1 + 1 + 2 + 1 + 1 and flag == quality.OK


def test_an_scd41_read_before_its_next_sample_waits_for_it():
    cfg, clock, env, sims, sampler = node("classroom-co2")
    cycle(cfg, clock, sampler)
    start = clock.monotonic_s()
    values = sampler.sample()  # at once: the sensor NACKs read_measurement, then it is polled
    assert all(f == quality.OK for q, v, f in values), values
    assert 1 <= clock.monotonic_s() - start <= 6  # the next 5 s sample, seen within 1 s polls
    assert sampler.counters["nacks"] == 0  # "no sample yet" is not a bus fault
