"""Hypothesis properties of the Sensirion framing and of the SCD4x driver facing a faulty device."""

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import CRCError, DeviceError
from drivers.scd4x import SCD4X
from drivers.sensirion import command_bytes, pack_word, unpack_words
from simulators.clock import VirtualClock
from simulators.i2c import Nack, SimI2CBus, SimI2CDevice

words16 = st.integers(min_value=0, max_value=0xFFFF)


@given(words16)
def test_crc_detects_every_single_bit_flip(word):
    frame = pack_word(word)
    for bit in range(24):
        bad = bytearray(frame)
        bad[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises(CRCError):
            unpack_words(bytes(bad), 1)


@given(st.lists(words16, max_size=8))
def test_pack_unpack_round_trip(words):
    buf = b"".join(pack_word(w) for w in words)
    assert len(buf) == 3 * len(words)
    assert unpack_words(buf, len(words)) == words


@given(words16, st.lists(words16, max_size=4))
def test_command_frame_is_code_then_packed_words(code, words):
    frame = command_bytes(code, words)
    assert frame[:2] == bytes((code >> 8, code & 0xFF))
    assert unpack_words(frame[2:]) == words


class ChaosDevice(SimI2CDevice):
    """A faulty device: accepts any write, and answers each read (or NACKs) as Hypothesis says."""

    def __init__(self, data):
        super().__init__(0x62)
        self.data = data

    def on_write(self, data):
        if self.data.draw(st.booleans(), label="nack write"):
            raise Nack("chaos")

    def on_read(self, n):
        if self.data.draw(st.booleans(), label="nack read"):
            raise Nack("chaos")
        if self.data.draw(st.booleans(), label="valid crc"):  # correct CRCs, arbitrary words
            words = self.data.draw(st.lists(words16, min_size=n // 3, max_size=n // 3))
            return b"".join(pack_word(w) for w in words)
        return self.data.draw(st.binary(min_size=n, max_size=n), label="bytes")


READS = [
    ("read_measurement", ()), ("get_data_ready_status", ()), ("get_temperature_offset", ()),
    ("get_sensor_altitude", ()), ("get_ambient_pressure", ()), ("perform_forced_recalibration", (480,)),
    ("get_automatic_self_calibration_enabled", ()), ("get_automatic_self_calibration_target", ()),
    ("get_automatic_self_calibration_initial_period", ()), ("get_automatic_self_calibration_standard_period", ()),
    ("get_serial_number", ()), ("perform_self_test", ()), ("get_sensor_variant", ()), ("wake_up", ()),
    ("measure_single_shot", ()), ("stop_periodic_measurement", ()), ("set_temperature_offset", (4.0,)),
]


@settings(max_examples=300, deadline=None)
@given(st.data(), st.lists(st.sampled_from(READS), min_size=1, max_size=6))
def test_driver_fed_arbitrary_bytes_raises_only_documented_errors(data, calls):
    clock = VirtualClock()
    bus = SimI2CBus(clock)
    bus.attach(ChaosDevice(data))
    scd = SCD4X(bus, clock)
    for name, args in calls:
        try:
            getattr(scd, name)(*args)
        except OSError as e:
            assert e.args[0] == errno.ENODEV
        except (CRCError, DeviceError):
            pass
