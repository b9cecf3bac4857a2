"""Bus and clock behaviour every rig must give (CPython's SimI2CBus in-process, and the
MicroPython ``machine.I2C`` shim over the simulator socket), on the ``echo`` test device
(``simulators/testdevice.py``: write ``[reg, data...]``, read from the register pointer)."""

import errno

from tests.behaviour.harness import close, raises

_A = 0x20
_B = 0x21


def _echo(address=_A, **kw):
    spec = {"model": "echo", "address": address}
    spec.update(kw)
    return spec


def check_scan_lists_attached_devices(rig):
    assert rig.setup([_echo(_B), _echo(_A)]) == [_A, _B]
    assert rig.bus.scan() == [_A, _B]


def check_write_then_read_back(rig):
    rig.setup([_echo()])
    assert rig.bus.writeto(_A, bytes([3, 0xDE, 0xAD, 0xBE])) == 4
    rig.bus.writeto(_A, bytes([3]))
    buf = bytearray(3)
    rig.bus.readfrom_into(_A, buf)
    assert buf == bytearray([0xDE, 0xAD, 0xBE]), buf
    rig.bus.writeto(_A, bytes([4]))
    assert bytes(rig.bus.readfrom(_A, 2)) == bytes([0xAD, 0xBE])


def check_register_read_in_one_transaction(rig):
    rig.setup([_echo()], bus={"freq_hz": 100000})
    rig.bus.writeto(_A, bytes([3, 0xDE, 0xAD, 0xBE]))
    s0 = rig.now_s()
    buf = bytearray(3)
    rig.bus.readfrom_mem_into(_A, 4, buf)  # pointer 4, repeated START, 3 bytes
    assert buf == bytearray([0xAD, 0xBE, 0]), buf
    # address + pointer, then address + 3 bytes: 6 bytes of 9 bit-times at 10 us
    assert close(rig.now_s() - s0, 540e-6, 1e-9), rig.now_s() - s0
    rig.bus.readfrom_mem_into(_A, 3, buf)
    assert buf == bytearray([0xDE, 0xAD, 0xBE]), buf
    e = raises(OSError, rig.bus.readfrom_mem_into, 0x30, 0, bytearray(2))
    assert e.errno == errno.ENODEV, e
    rig.fault(_A, {"kind": "nack"})
    e = raises(OSError, rig.bus.readfrom_mem_into, _A, 3, bytearray(2))
    assert e.errno == errno.ENODEV, e
    assert rig.counters(_A)["nacks"] == 1


def check_long_reads_whole(rig):
    data = bytes(range(200))
    rig.setup([_echo(size=256, initial=list(data))])
    rig.bus.writeto(_A, bytes([0]))
    buf = bytearray(200)
    rig.bus.readfrom_into(_A, buf)
    assert bytes(buf) == data
    buf = bytearray(150)
    rig.bus.readfrom_mem_into(_A, 10, buf)
    assert bytes(buf) == data[10:160]
    buf = bytearray(3)
    rig.bus.readfrom_mem_into(_A, 5, buf)
    assert bytes(buf) == data[5:8]


def check_missing_device_nacks_with_enodev(rig):
    rig.setup([_echo()])
    e = raises(OSError, rig.bus.writeto, 0x30, b"\x00")
    assert e.errno == errno.ENODEV, e
    e = raises(OSError, rig.bus.readfrom_into, 0x30, bytearray(1))
    assert e.errno == errno.ENODEV, e


def check_nack_fault_gives_enodev_and_is_counted(rig):
    rig.setup([_echo()])
    rig.fault(_A, {"kind": "nack"})
    e = raises(OSError, rig.bus.readfrom_into, _A, bytearray(2))
    assert e.errno == errno.ENODEV, e
    assert rig.counters(_A)["nacks"] == 1
    assert rig.bus.scan() == []
    rig.clear_faults(_A)
    assert rig.bus.scan() == [_A]


def check_stuck_bus_times_out_until_recovered(rig):
    rig.setup([_echo()])
    rig.fault(None, {"kind": "stuck_bus", "recoverable": True})
    e = raises(OSError, rig.bus.writeto, _A, b"\x00")
    assert e.errno == errno.ETIMEDOUT, e
    assert rig.bus.scan() == []
    assert rig.counters(None)["timeouts"] == 1
    rig.recover()
    assert rig.bus.scan() == [_A]


def check_long_clock_stretch_times_out(rig):
    rig.setup([_echo()], bus={"timeout_ms": 50})
    rig.fault(_A, {"kind": "stretch", "magnitude": 80})
    e = raises(OSError, rig.bus.readfrom_into, _A, bytearray(1))
    assert e.errno == errno.ETIMEDOUT, e


def check_unknown_register_is_an_error_not_bytes(rig):
    rig.setup([_echo(size=4)])
    e = raises(Exception, rig.bus.writeto, _A, bytes([9, 1]))
    assert type(e).__name__ == "UnknownCommand", repr(e)
    rig.bus.writeto(_A, bytes([3]))
    e = raises(Exception, rig.bus.readfrom_into, _A, bytearray(2))
    assert type(e).__name__ == "UnknownCommand", repr(e)


def check_sleep_advances_virtual_time(rig):
    rig.setup([])
    clock = rig.clock
    t0 = clock.ticks_ms()
    w0 = clock.wall_s()
    s0 = rig.now_s()
    clock.sleep_ms(1500)
    assert clock.ticks_diff(clock.ticks_ms(), t0) == 1500
    assert close(clock.wall_s() - w0, 1.5, 1e-6)
    assert close(rig.now_s() - s0, 1.5, 1e-6)
    rig.advance_s(2)
    assert clock.ticks_diff(clock.ticks_ms(), t0) == 3500


def check_bus_traffic_costs_virtual_time(rig):
    rig.setup([_echo()], bus={"freq_hz": 100000})
    s0 = rig.now_s()
    rig.bus.writeto(_A, bytes(9))  # START + address + 9 bytes: 10 bytes of 9 bit-times at 10 us
    assert close(rig.now_s() - s0, 900e-6, 1e-9), rig.now_s() - s0


def check_wall_time_starts_trusted_at_the_scenario_epoch(rig):
    rig.setup([])
    assert rig.clock.wall_trusted() is True
    assert rig.clock.wall_s() >= 1767571200  # simulators.clock.DEFAULT_START_WALL_S


def check_power_cycle_restores_power_on_state(rig):
    rig.setup([_echo(initial=[7, 8])])
    rig.bus.writeto(_A, bytes([0, 1, 2]))
    rig.power(_A, "off")
    e = raises(OSError, rig.bus.writeto, _A, b"\x00")
    assert e.errno == errno.ENODEV, e
    rig.power(_A, "on")
    rig.bus.writeto(_A, bytes([0]))
    assert bytes(rig.bus.readfrom(_A, 2)) == bytes([7, 8])
    assert rig.attr(_A, "registers")[:3] == [7, 8, 0]


def check_crc_flip_fault_flips_one_bit(rig):
    rig.setup([_echo(initial=[0, 0, 0, 0])])
    rig.fault(_A, {"kind": "crc_flip"})
    buf = bytearray(4)
    rig.bus.readfrom_into(_A, buf)
    bits = 0
    for b in buf:
        bits += bin(b).count("1")
    assert bits == 1, buf
    assert rig.counters(_A)["crc_flips"] == 1


def check_wall_jump_moves_wall_time_not_ticks(rig):
    rig.setup([])
    t0 = rig.clock.ticks_ms()
    w0 = rig.clock.wall_s()
    w1 = rig.wall(86400.0, False)
    assert close(w1 - w0, 86400.0, 1.0)
    assert close(rig.clock.wall_s(), w1, 1.0)
    assert rig.clock.wall_trusted() is False
    assert rig.clock.ticks_diff(rig.clock.ticks_ms(), t0) < 1000
