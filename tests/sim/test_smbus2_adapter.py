"""The Pi's smbus2 adapter (gateway.i2c.SMBus2I2C), tested by routing its real ``i2c_msg``
transactions into SimI2CBus through SimSMBus (the I2C_RDWR ioctl's job), not by mocks."""

import errno

import pytest

from drivers.scd4x import SCD4X
from drivers.tmp117 import TMP117
from gateway.i2c import SMBus2I2C
from simulators.clock import VirtualClock
from simulators.faults import Fault
from simulators.i2c import SimI2CBus
from simulators.scd4x import SimSCD4X
from simulators.smbus import SimSMBus
from simulators.tmp117 import SimTMP117

ROOM = {"co2_ppm": 612.0, "temperature_c": 21.5, "rh_percent": 41.0}


@pytest.fixture
def rig():
    clock = VirtualClock()
    bus = SimI2CBus(clock)
    bus.attach(SimSCD4X(truth=ROOM, seed=3))
    bus.attach(SimTMP117(0x48, truth={"temperature_c": 58.25}, seed=3))
    clock.sleep_ms(1000)
    return clock, bus, SMBus2I2C(SimSMBus(bus))


def test_scan_probes_like_i2cdetect_and_finds_the_parts(rig):
    clock, bus, pi = rig
    assert pi.scan() == [0x48, 0x62]


def test_serial_number_bytes_cross_the_adapter_exactly(rig):
    clock, bus, pi = rig
    # REFERENCE.md §1.3: W 36 82; R F8 96 31 9F 07 C2 3B BE 89 (the simulator's default serial)
    assert pi.writeto(0x62, b"\x36\x82") == 2
    clock.sleep_ms(1)
    buf = bytearray(9)
    pi.readfrom_into(0x62, buf)
    assert bytes(buf) == bytes.fromhex("F896319F07C23BBE89")


def test_real_drivers_read_through_the_adapter(rig):
    clock, bus, pi = rig
    scd = SCD4X(pi, clock)
    clock.sleep_ms(scd.start_periodic_measurement())
    co2, t, rh = scd.read_measurement()
    assert abs(co2 - 612) <= 50 + 0.025 * 612
    assert abs(t - 21.5) <= 0.8 and abs(rh - 41.0) <= 6.0
    tmp = TMP117(pi, clock, 0x48)
    tmp.check_device_id()
    clock.sleep_ms(tmp.set_mode("shutdown"))
    clock.sleep_ms(tmp.start_one_shot())
    assert abs(tmp.read_temperature_c() - 58.25) <= 0.1


def test_nack_is_linux_eremoteio_and_stuck_bus_etimedout(rig):
    clock, bus, pi = rig
    with pytest.raises(OSError) as e:
        pi.writeto(0x30, b"\x00")
    assert e.value.errno == errno.EREMOTEIO
    bus.add_fault(Fault("stuck_bus", start_s=clock.monotonic_s(), end_s=clock.monotonic_s() + 60))
    with pytest.raises(OSError) as e:
        pi.readfrom(0x48, 2)
    assert e.value.errno == errno.ETIMEDOUT
    assert pi.scan() == []


def test_bad_address_is_refused_before_the_bus(rig):
    clock, bus, pi = rig
    with pytest.raises(ValueError, match="7-bit"):
        pi.writeto(0x80, b"\x00")


def test_a_register_read_is_one_combined_transaction(rig):
    clock, bus, pi = rig
    n = bus.counters["transactions"]
    buf = bytearray(2)
    pi.readfrom_mem_into(0x48, 0x0F, buf)  # Device_ID (REFERENCE §2.2): write 0F, restart, read 2
    assert bytes(buf) == b"\x01\x17"
    assert bus.counters["transactions"] - n == 1
    with pytest.raises(OSError) as e:
        pi.readfrom_mem_into(0x30, 0x00, buf)
    assert e.value.errno == errno.EREMOTEIO
    with pytest.raises(ValueError, match="memaddr"):
        pi.readfrom_mem_into(0x48, 0x100, buf)
