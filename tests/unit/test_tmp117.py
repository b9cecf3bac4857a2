"""TMP117 pure code: datasheet conversion vectors, the configuration word, the cycle-time
table, argument checks, and the driver's handling of the 0x8000 reset value."""

import pytest

from drivers import tmp117 as t
from drivers.errors import DeviceError
from simulators.clock import VirtualClock
from simulators.i2c import SimI2CBus, SimI2CDevice


# Datasheet SNOSD82D Table 7-1 (and REFERENCE §2.2 for 25, 60, -25 °C)
@pytest.mark.parametrize("raw,celsius", [
    (0x0C80, 25.0), (0x1E00, 60.0), (0xF380, -25.0), (0x8000, -256.0), (0xFFF0, -0.125),
    (0xFFFF, -0.0078125), (0x0000, 0.0), (0x0001, 0.0078125), (0x0010, 0.125), (0x0080, 1.0),
    (0x3200, 100.0), (0x7FFF, 255.9921875), (0x6000, 192.0),
])
def test_datasheet_vectors_both_ways(raw, celsius):
    assert t.temperature_c_from_raw(raw) == celsius
    assert t.raw_from_temperature_c(celsius) == raw


def test_raw_from_temperature_rounds_to_nearest_lsb():
    assert t.raw_from_temperature_c(25.004) == 0x0C81  # 25.0039 is 0.5 LSB: rounds up
    assert t.raw_from_temperature_c(25.003) == 0x0C80
    assert t.raw_from_temperature_c(-0.004) == 0xFFFF


@pytest.mark.parametrize("bad", [-256.01, 256.0, float("nan"), float("inf"), "warm", None])
def test_raw_from_temperature_refuses_out_of_range_naming_the_argument(bad):
    with pytest.raises(ValueError, match="high_limit_c"):
        t.raw_from_temperature_c(bad, "high_limit_c")


def test_factory_configuration_encodes_to_0x0220():
    assert t.encode_config() == t.CONFIG_RESET == 0x0220
    assert t.decode_config(0x0220) == {
        "high_alert": False, "low_alert": False, "data_ready": False, "eeprom_busy": False,
        "mode": "continuous", "conv": 4, "averaging": 8, "therm_mode": False,
        "alert_active_high": False, "data_ready_on_alert_pin": False,
    }


@pytest.mark.parametrize("kwargs,word", [
    ({"mode": "shutdown", "conv": 0, "averaging": 1}, 0x0400),
    ({"mode": "one_shot", "conv": 7, "averaging": 64}, 0x0FE0),
    ({"mode": "continuous", "conv": 0, "averaging": 32, "therm_mode": True}, 0x0050),
    ({"mode": "continuous", "conv": 1, "averaging": 1, "alert_active_high": True,
      "data_ready_on_alert_pin": True}, 0x008C),
])
def test_encode_config_fields(kwargs, word):
    assert t.encode_config(**kwargs) == word
    decoded = t.decode_config(word)
    for key, value in kwargs.items():
        assert decoded[key] == value


def test_decode_config_flags_and_mod_10_reads_as_continuous():
    d = t.decode_config(0xF800 | 0x0220)
    assert (d["high_alert"], d["low_alert"], d["data_ready"], d["eeprom_busy"]) == (True, True, True, True)
    assert d["mode"] == "continuous"  # MOD 10 is continuous conversion (datasheet)


@pytest.mark.parametrize("kwargs,name", [
    ({"mode": "sleep"}, "mode"), ({"conv": 8}, "conv"), ({"averaging": 16}, "averaging"),
])
def test_encode_config_refuses_bad_fields_by_name(kwargs, name):
    with pytest.raises(ValueError, match=name):
        t.encode_config(**kwargs)


# Datasheet §7.4.1 "Conversion Cycle Time in CC Mode": rows CONV 0..7, columns AVG 1/8/32/64
_TABLE = [
    (15.5, 125, 500, 1000), (125, 125, 500, 1000), (250, 250, 500, 1000), (500, 500, 500, 1000),
    (1000, 1000, 1000, 1000), (4000, 4000, 4000, 4000), (8000, 8000, 8000, 8000),
    (16000, 16000, 16000, 16000),
]


@pytest.mark.parametrize("conv", range(8))
def test_conversion_cycle_table(conv):
    got = tuple(t.conversion_cycle_ms(conv, n) for n in (1, 8, 32, 64))
    assert got == _TABLE[conv]


def test_active_conversion_and_wait_times():
    assert [t.active_conversion_ms(n) for n in (1, 8, 32, 64)] == [15.5, 124.0, 496.0, 992.0]
    # typical + 10 % + 1 ms tick margin, whole ms
    assert [t.wait_ms_for(n) for n in (1, 8, 32, 64)] == [19, 138, 547, 1093]


def test_cycle_ms_to_conv_field():
    assert [t.conv_from_cycle_ms(ms) for ms in t.CYCLE_MS] == list(range(8))
    with pytest.raises(ValueError, match="cycle_ms"):
        t.conv_from_cycle_ms(100)


def test_averaging_field():
    assert [t.bits_from_averaging(n) for n in (1, 8, 32, 64)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="averaging"):
        t.bits_from_averaging(4)


@pytest.mark.parametrize("address", [0x47, 0x4C, 0x70, "0x48", None, 72.0])
def test_constructor_refuses_addresses_outside_0x48_0x4b(address):
    with pytest.raises(ValueError, match="address"):
        t.TMP117(None, VirtualClock(), address=address)


def test_int16():
    assert [t.int16(w) for w in (0, 0x7FFF, 0x8000, 0xFFFF, 0x1FFFF)] == [0, 32767, -32768, -1, -1]


class _Registers(SimI2CDevice):
    """A bare 16-bit register file answering the pointer protocol (no conversions)."""

    def __init__(self, address, words):
        super().__init__(address)
        self.words = dict(words)
        self.pointer = 0

    def on_write(self, data):
        self.pointer = data[0]
        if len(data) == 3:
            self.words[data[0]] = (data[1] << 8) | data[2]

    def on_read(self, n):
        w = self.words[self.pointer]
        return bytes((w >> 8, w & 0xFF))[:n]


def _driver(words):
    clock = VirtualClock()
    bus = SimI2CBus(clock)
    bus.attach(_Registers(0x49, words))
    return t.TMP117(bus, clock, address=0x49)


def test_reset_value_0x8000_raises_device_error_saying_no_conversion_yet():
    drv = _driver({0x00: 0x8000})
    with pytest.raises(DeviceError, match="no conversion"):
        drv.read_temperature_c()


def test_result_register_decodes_and_wrong_device_id_is_reported():
    drv = _driver({0x00: 0x1E00, 0x0F: 0x1116})
    assert drv.read_temperature_c() == 60.0
    with pytest.raises(DeviceError, match="0x1116"):
        drv.check_device_id()


def test_device_id_ignores_revision_bits():
    assert _driver({0x0F: 0x3117}).check_device_id() == 0x3117
