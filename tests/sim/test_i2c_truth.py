"""A device asks a pure environment model once per instant (``SimI2CDevice.truth`` keeps the
values of the last wall time it asked about): the bytes on the bus are the same as when every
quantity is asked for separately, and a truth that is not a model's ``at`` (the fleet's fault
wrappers draw from a device's rng on every call) is still called every time."""

from simulators.ads1115 import NO2_ISB_INPUTS, SimADS1115
from simulators.clock import VirtualClock
from simulators.environment import ClassroomCO2, StreetNO2
from simulators.i2c import SimI2CBus
from simulators.scd4x import SimSCD4X
from simulators.tmp117 import SimTMP117


def _bus(classroom_truth, street_truth):
    bus = SimI2CBus(VirtualClock())
    bus.attach(SimSCD4X(truth=classroom_truth, seed=3))
    bus.attach(SimADS1115(0x48, inputs=NO2_ISB_INPUTS, truth=street_truth, seed=4))
    bus.attach(SimTMP117(0x49, truth=street_truth, seed=5))
    return bus


def _traffic(bus, rounds=12):
    """Raw transactions (no driver): SCD4x periodic measurement (0x21B1, then read_measurement
    0xEC05 every 5 s), an ADS1115 single shot on AIN0-AIN1 (config 0xC383), the TMP117's
    temperature register. Returns every byte read, in order."""
    out = bytearray()
    buf9, buf2 = bytearray(9), bytearray(2)
    bus.clock.advance_s(1.5)  # past the SCD4x's power-up
    bus.writeto(0x62, b"\x21\xb1")
    for _ in range(rounds):
        bus.clock.advance_s(5.0)
        bus.writeto(0x62, b"\xec\x05")
        bus.clock.advance_s(0.002)
        bus.readfrom_into(0x62, buf9)
        bus.writeto(0x48, b"\x01\xc3\x83")
        bus.clock.advance_s(0.2)
        bus.writeto(0x48, b"\x00")
        bus.readfrom_into(0x48, buf2)
        out += buf9 + buf2
        bus.writeto(0x49, b"\x00")
        bus.readfrom_into(0x49, buf2)
        out += buf2
    return bytes(out)


def test_a_pure_model_gives_the_same_bytes_as_a_truth_asked_every_time():
    room, street = ClassroomCO2(seed=1), StreetNO2(seed=2)
    calls = []

    def every_time(model):
        def truth(wall_s):
            calls.append(wall_s)
            return model.at(wall_s)
        return truth

    kept = _traffic(_bus(room.at, street.at))
    asked = _traffic(_bus(every_time(room), every_time(street)))
    assert kept == asked
    assert len(set(kept[i:i + 2] for i in range(9, len(kept), 13))) > 1  # the ADC's readings vary
    # a wrapper (not a model's ``at``) is asked for every quantity: several times per instant
    assert len(calls) > len(set(calls))
