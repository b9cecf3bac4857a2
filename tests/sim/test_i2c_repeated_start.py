"""``SimI2CBus.readfrom_mem_into`` (``drivers.bus``: a register read with a repeated START):
the same device calls and wire time as the pointer write and the read it replaces, one
transaction, and a NACK in either phase an ``OSError(ENODEV)`` that ends it; and the simulator
socket's READ_MEM op answers it in one request."""

import errno

import pytest

from simulators import i2c_server as proto
from simulators.clock import VirtualClock
from simulators.i2c import Nack, SimI2CBus
from simulators.i2c_server import SimServer
from simulators.testdevice import SimEchoDevice
from tests.mpy.test_shim import Client


class _DeafToReads(SimEchoDevice):
    """An echo device that ACKs writes and NACKs every read (a read phase that fails)."""

    def on_read(self, n):
        raise Nack("reads NACKed")


def _bus(device):
    clock = VirtualClock()
    bus = SimI2CBus(clock, freq_hz=100_000)
    bus.attach(device)
    return clock, bus


def test_same_wire_time_and_device_traffic_as_pointer_then_read():
    clock, bus = _bus(SimEchoDevice(0x20, initial=[1, 2, 3, 4]))
    t0 = clock.now_us
    bus.writeto(0x20, b"\x02")
    a = bus.readfrom(0x20, 2)
    split_us = clock.now_us - t0
    t0 = clock.now_us
    n = bus.counters["transactions"]
    b = bus.readfrom_mem(0x20, 2, 2)
    assert a == b == b"\x03\x04"
    assert clock.now_us - t0 == split_us == 180 + 270
    assert bus.counters["transactions"] - n == 1
    assert bus.devices[0x20].counters["writes"] == 2 and bus.devices[0x20].counters["reads"] == 2


def test_a_nack_in_the_read_phase_is_enodev_after_the_pointer_was_taken():
    clock, bus = _bus(_DeafToReads(0x20, initial=[9, 8]))
    with pytest.raises(OSError) as e:
        bus.readfrom_mem_into(0x20, 1, bytearray(1))
    assert e.value.errno == errno.ENODEV
    dev = bus.devices[0x20]
    assert dev.pointer == 1 and dev.counters["nacks"] == 1 and bus.counters["nacks"] == 1


def test_a_nack_in_the_write_phase_ends_the_transaction():
    clock, bus = _bus(SimEchoDevice(0x20))
    bus.devices[0x20].power_off()
    t0 = clock.now_us
    with pytest.raises(OSError) as e:
        bus.readfrom_mem_into(0x20, 1, bytearray(2))
    assert e.value.errno == errno.ENODEV
    assert clock.now_us - t0 == 180  # the address and pointer byte only
    assert bus.devices[0x20].counters["reads"] == 0


def test_bad_register_address_is_a_value_error():
    clock, bus = _bus(SimEchoDevice(0x20))
    with pytest.raises(ValueError, match="memaddr"):
        bus.readfrom_mem_into(0x20, 256, bytearray(1))
    with pytest.raises(ValueError, match="addrsize"):
        bus.readfrom_mem_into(0x20, 1, bytearray(1), addrsize=16)


def test_the_socket_answers_a_register_read_in_one_request():
    with SimServer() as srv:
        srv.rig.setup([{"model": "echo", "address": 0x20, "initial": [5, 6, 7]}])
        c = Client(srv)
        assert c.call(proto.OP_READ_MEM, 0x20, b"\x01\x00\x02") == (proto.ST_OK, b"\x06\x07")
        assert c.call(proto.OP_READ_MEM, 0x21, b"\x01\x00\x02") == (proto.ST_OSERROR, b"ENODEV")
        status, body = c.call(proto.OP_READ_MEM, 0x20, b"\x01")  # malformed
        assert status == proto.ST_ERROR and b"ProtocolError" in body
