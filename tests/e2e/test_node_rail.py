"""The sampler's last step before the watchdog (RELIABILITY.md, "SDA stuck low / bus timeout":
nine clocks + STOP, then power-cycle the sensor rail), on CPython against the simulated parts:
the firmware's ``app.sensors.Sampler`` built from the bin-level node's real configuration (its
rail is gated), reading a simulated TMP117 and I2CXL on a ``SimI2CBus``.

The stuck bus here is one a part holds until it loses power (``Fault(..., released_by_power=True)``:
a part wedged mid-byte whose state machine ignores SCL, the case the nine clocks cannot free).
``BoardRail.cycle`` is the board's switch, as ``simulators/mpy/simrail.py`` drives it under
MicroPython: the parts off for ``off_ms`` (their volatile state gone: ``power_on`` puts each
model in its power-on state; the holder lets go of SDA with its power), on again, then
``settle_ms``. The firmware's side is real: it decides when to cycle, brings every part up
again and reads in the same wake. The end-to-end runs (the built firmware under MicroPython,
its rail pin switching the simulated parts; counters and flags in the records) are in
``tests/e2e/test_node_faults.py``."""

import pytest

from civicedge import firmware_build as fb
from firmware.app import config as node_config
from firmware.app.sensors import Sampler, build_sensors
from protocol import quality
from simulators.clock import VirtualClock
from simulators.faults import Fault
from simulators.i2c import SimI2CBus
from simulators.i2cxl import SimMaxSonar
from simulators.tmp117 import SimTMP117

TRUTH = {"distance_cm": 70.0, "temperature_c": 15.0}


class BoardRail:
    """The switched rail of the test board: ``cycle()`` as ``app.hw.Rail.cycle`` drives it."""

    def __init__(self, bus, clock, cfg):
        self.bus, self.clock, self.cfg = bus, clock, cfg["rail"]
        self.cycles = 0

    def cycle(self):
        self.cycles += 1
        for dev in self.bus.devices.values():
            dev.power_off()  # a part holding SDA lets go (released_by_power)
        self.clock.sleep_ms(self.cfg["off_ms"])
        for dev in self.bus.devices.values():
            dev.power_on()
        self.clock.sleep_ms(self.cfg["settle_ms"])


def bin_node(with_rail=True):
    board, cfg = fb.reference_config(fb.load_profile("bin-level"))
    cfg = node_config.validate(cfg, "bin-level")
    clock = VirtualClock()
    bus = SimI2CBus(clock, timeout_ms=cfg["i2c"][0]["timeout_us"] / 1000)
    sims = {"sonar": bus.attach(SimMaxSonar(0x70, truth=TRUTH, seed=3)),
            "air": bus.attach(SimTMP117(0x48, truth=TRUTH, seed=4))}
    rail = BoardRail(bus, clock, cfg)
    clock.sleep_ms(1000)
    sampler = Sampler(build_sensors(cfg["sensors"], {0: bus}, clock), clock, cfg["quality"],
                      recover_bus=lambda bus_id: bus.recover(), power_cycle=rail.cycle if with_rail else None)
    sampler.prepare()
    return cfg, clock, bus, sims, rail, sampler


def sample(cfg, clock, sampler):
    clock.sleep_ms(cfg["interval_s"] * 1000)
    return {q: (v, f) for q, v, f in sampler.sample()}


def ok(values):
    return (values["temperature_c"][1] == quality.OK and abs(values["temperature_c"][0] - 15.0) <= 0.1
            and values["distance_cm"][1] == quality.OK and abs(values["distance_cm"][0] - 70.0) <= 2.0)


@pytest.mark.parametrize("after_ms", [0, 60])
def test_a_part_holding_sda_until_power_is_lost_is_freed_by_the_rail_and_read_in_the_same_wake(after_ms):
    """The hold begins as the wake starts (every step fails) or 60 ms in, between the TMP117's
    start and its read (a conversion the power-cycle then loses: the part is started again)."""
    cfg, clock, bus, sims, rail, sampler = bin_node()
    assert ok(sample(cfg, clock, sampler))
    t = clock.monotonic_s() + cfg["interval_s"] + after_ms / 1000.0
    bus.add_fault(Fault("stuck_bus", start_s=t, released_by_power=True))  # no end: nine clocks do not free it
    values = sample(cfg, clock, sampler)
    assert ok(values), values
    c = sampler.counters
    assert rail.cycles == c["rail_cycles"] == 1 and c["bus_recoveries"] == bus.counters["recoveries"] == 1
    assert c["timeouts"] == bus.counters["timeouts"] == 2 and c["sensor_failures"] == 0
    # both parts came up from power-on during this wake, and were read after it
    since_fault_ms = (clock.monotonic_s() - t) * 1000
    assert all(dev.ms_since_power_on() < since_fault_ms for dev in sims.values())
    assert ok(sample(cfg, clock, sampler)) and sampler.counters["rail_cycles"] == 1


def test_a_bus_that_stays_stuck_costs_one_power_cycle_per_sample_and_no_invented_value():
    cfg, clock, bus, sims, rail, sampler = bin_node()
    cycles = []
    sampler.power_cycle = lambda: cycles.append(clock.monotonic_s())  # the part holding SDA is not on the rail
    t = clock.monotonic_s() + cfg["interval_s"]
    bus.add_fault(Fault("stuck_bus", start_s=t, end_s=t + 3 * cfg["interval_s"] - 1))
    for n in (1, 2, 3):
        values = sample(cfg, clock, sampler)
        assert all(v == (None, quality.SENSOR_FAILED) for v in values.values()), values
        assert len(cycles) == sampler.counters["rail_cycles"] == n
    assert ok(sample(cfg, clock, sampler))  # the bus came back: both parts prepared and read again
    assert sampler.counters["rail_cycles"] == 3


def test_without_a_switched_rail_there_is_no_power_cycle_and_no_counter():
    cfg, clock, bus, sims, rail, sampler = bin_node(with_rail=False)
    t = clock.monotonic_s() + cfg["interval_s"]
    bus.add_fault(Fault("stuck_bus", start_s=t))
    values = sample(cfg, clock, sampler)
    assert all(v == (None, quality.SENSOR_FAILED) for v in values.values())
    assert "rail_cycles" not in sampler.counters and rail.cycles == 0


@pytest.mark.parametrize("holder, off, released", [(None, ("sonar",), False), (None, ("sonar", "air"), True),
                                                    (0x48, ("sonar",), False), (0x48, ("air",), True)])
def test_a_held_bus_is_released_when_its_holder_loses_power(holder, off, released):
    """With a ``holder`` named, that part's power; with none, every part on the bus off (the
    holder is one of them). A fault that is not ``released_by_power`` ignores power."""
    cfg, clock, bus, sims, rail, sampler = bin_node()
    held = bus.add_fault(Fault("stuck_bus", released_by_power=True, holder=holder))
    plain = bus.add_fault(Fault("stuck_bus", end_s=clock.monotonic_s() + 10))
    for name in off:
        sims[name].power_off()
    assert held.cleared is released and not plain.cleared
    clock.sleep_ms(10_000)
    for dev in sims.values():
        dev.power_on()
    clock.sleep_ms(10)
    assert bus.scan() == ([] if not released else [0x48, 0x70])
