"""The ADS1115 driver against SimADS1115 on SimI2CBus + VirtualClock, and the model against
a hand-written raw exchange (as an independent driver written from the datasheet does)."""

import errno
import json

import pytest

from drivers import ads1115 as ads
from drivers.errors import DeviceError
from simulators.ads1115 import NO2_ISB_INPUTS, SimADS1115
from simulators.clock import VirtualClock
from simulators.faults import Fault
from simulators.i2c import SimI2CBus, UnknownCommand
from simulators.registry import build_device

A = 0x48
PINS = {"0": 0.5, "1": 1.0, "2": 1.5, "3": 2.5}


def make(inputs=None, truth=None, seed=1, data_rate_error=0.0, address=A, **bus_kw):
    clock = VirtualClock()
    bus = SimI2CBus(clock, **bus_kw)
    dev = bus.attach(SimADS1115(address=address, inputs=inputs, seed=seed, truth=truth,
                                data_rate_error=data_rate_error))
    return clock, bus, dev, ads.ADS1115(bus, clock, address=address)


def tol(v, fsr_v, lsbs=3):
    """Model error bound: offset (1 LSB) + rounding + noise within ``lsbs`` LSB, plus the
    chip's gain error (0.01 %) of the input."""
    return lsbs * ads.lsb_v(fsr_v) + 1e-4 * abs(v)


def raw_read(bus, pointer=None):
    """Datasheet read: (optionally) write the pointer, then read 2 bytes MSB first."""
    if pointer is not None:
        bus.writeto(A, bytes([pointer]))
    b = bus.readfrom(A, 2)
    return b[0] << 8 | b[1]


def test_power_on_registers():
    clock, bus, dev, adc = make()
    assert adc.read_config() == 0x8583
    assert adc.read_register(0x02) == 0x8000
    assert adc.read_register(0x03) == 0x7FFF
    assert adc.read_conversion_raw() == 0  # cleared until the first conversion
    assert adc.is_conversion_ready()  # powered down, OS reads 1


def test_hand_written_raw_exchange_gets_the_datasheet_answer():
    clock, bus, dev, _ = make(inputs={"0": 1.2})
    bus.writeto(A, bytes([0x01, 0xC3, 0x83]))  # REFERENCE §3.1: AIN0, ±4.096 V, 128 SPS, start
    t_start = clock.now_us
    assert raw_read(bus, 0x01) & 0x8000 == 0  # converting
    while not raw_read(bus) & 0x8000:  # pointer still at Config: no need to rewrite it
        clock.sleep_ms(1)
    done_ms = (clock.now_us - t_start) / 1000
    assert 7.8125 <= done_ms <= 7.8125 + 1.5  # 1/128 s (+25 µs wake), seen within a poll
    raw = raw_read(bus, 0x00)
    assert abs(raw - 9600) * 125e-6 <= tol(1.2, 4.096)  # 1.2 V / 125 µV
    assert raw_read(bus) == raw  # pointer remembered: same register again
    assert raw_read(bus, 0x01) == 0xC383  # Config reads back as written, OS=1 idle


def test_os_bit_busy_then_idle_after_one_over_dr():
    clock, bus, dev, adc = make(inputs={"1": 0.2})
    ms = adc.start_single_shot("AIN1", 0.512, 8)
    assert ms == 140  # the slowest chip in spec: 125 ms / 0.9 + 25 µs, + 1 tick
    assert not adc.is_conversion_ready()
    clock.sleep_ms(123)  # the reads themselves take < 1 ms of bus time
    assert not adc.is_conversion_ready()
    clock.sleep_ms(2)
    assert adc.is_conversion_ready()
    assert adc.read_conversion_raw() * ads.lsb_v(0.512) == pytest.approx(0.2, abs=tol(0.2, 0.512))


def test_reading_too_early_gives_the_previous_conversion():
    clock, bus, dev, adc = make(inputs={"0": "sig_v"}, truth={"sig_v": 1.0})
    assert adc.read_single_shot_v("AIN0", 2.048, 64) == pytest.approx(1.0, abs=tol(1.0, 2.048))
    dev.set_truth({"sig_v": 2.0})
    adc.start_single_shot("AIN0", 2.048, 64)
    early = ads.raw_to_v(adc.read_conversion_raw(), 2.048)
    assert early == pytest.approx(1.0, abs=tol(1.0, 2.048))  # the chip's stale result
    adc.wait_conversion(64)
    assert ads.raw_to_v(adc.read_conversion_raw(), 2.048) == pytest.approx(2.0, abs=tol(2.0, 2.048))


def test_os_written_during_a_conversion_is_ignored():
    clock, bus, dev, adc = make(inputs={"0": 1.0})
    adc.start_single_shot("AIN0", 4.096, 8)
    clock.sleep_ms(100)
    bus.writeto(A, bytes([0x01, 0xC3, 0x03]))  # OS=1 again (8 SPS) mid-conversion
    clock.sleep_ms(26)  # 126 ms after the first start: done, not restarted
    assert adc.is_conversion_ready()
    assert dev.counters["conversions"] == 1


@pytest.mark.parametrize("data_rate_error", [-0.1, -0.05, 0.1])
def test_driver_polls_out_a_slow_or_fast_oscillator(data_rate_error):
    clock, bus, dev, adc = make(inputs={"0": 0.3}, data_rate_error=data_rate_error)
    for sps in ads.DATA_RATES_SPS:
        assert adc.read_single_shot_v("AIN0", 0.512, sps) == pytest.approx(0.3, abs=tol(0.3, 0.512, 6))


@pytest.mark.parametrize("mux", ads.MUX_NAMES)
def test_each_mux_setting(mux):
    clock, bus, dev, adc = make(inputs=PINS)
    pos, _, neg = mux.partition("-")
    expect = PINS[pos[-1]] - (PINS[neg[-1]] if neg else 0.0)
    assert adc.read_single_shot_v(mux, 4.096, 128) == pytest.approx(expect, abs=tol(expect, 4.096))


def test_pga_clipping_and_negative_differential():
    clock, bus, dev, adc = make(inputs={"0": 3.0, "1": 0.0})
    assert adc.read_single_shot_v("AIN0", 2.048, 128) == ads.raw_to_v(32767, 2.048)
    assert adc.read_conversion_raw() == 32767
    assert adc.read_single_shot_v("AIN1-AIN3", 0.256, 128) == pytest.approx(0.0, abs=3 * ads.lsb_v(0.256))
    dev2 = make(inputs={"0": 0.0, "1": 3.0})
    assert dev2[3].read_single_shot_v("AIN0-AIN1", 2.048, 128) == -2.048
    assert dev2[3].read_single_shot_v("AIN0-AIN1", 4.096, 128) == pytest.approx(-3.0, abs=tol(3.0, 4.096))


def test_unwired_input_reads_ground():
    clock, bus, dev, adc = make(inputs={"0": 1.0})
    assert abs(adc.read_single_shot_v("AIN3", 0.256, 8)) <= 3 * ads.lsb_v(0.256)


def test_continuous_mode_and_new_config_after_current_conversion():
    clock, bus, dev, adc = make(inputs={"0": 1.0, "1": 2.0})
    ms = adc.start_continuous("AIN0", 4.096, 250)  # 4 ms per conversion
    assert not adc.is_conversion_ready()  # OS reads 0: always converting
    assert adc.read_continuous_v() == pytest.approx(1.0, abs=tol(1.0, 4.096))
    assert ms >= 5
    clock.sleep_ms(41)  # a few conversions later, still AIN0
    assert adc.read_continuous_v() == pytest.approx(1.0, abs=tol(1.0, 4.096))
    # Switch to AIN1 mid-conversion: the conversion in progress finishes on AIN0.
    t_switch = clock.now_us
    adc.write_config(ads.config_word("AIN1", 4.096, 250, single_shot=False, start=False))
    next_end = dev.busy_until_us()
    assert next_end - t_switch < 4100
    clock.advance_to_s((next_end + 100) / 1e6)  # the old-config conversion has completed
    assert adc.read_continuous_v() == pytest.approx(1.0, abs=tol(1.0, 4.096))
    clock.sleep_ms(4.1)  # the first conversion with the new config
    assert adc.read_continuous_v() == pytest.approx(2.0, abs=tol(2.0, 4.096))
    adc.stop_continuous()
    clock.sleep_ms(5)
    assert adc.is_conversion_ready()  # powered down after the conversion in progress
    n = dev.counters["conversions"]
    clock.sleep_ms(100)
    assert adc.is_conversion_ready() and dev.counters["conversions"] == n


def test_single_shot_after_continuous_reads_the_new_input():
    clock, bus, dev, adc = make(inputs={"0": 1.0, "1": 2.0})
    adc.start_continuous("AIN0", 4.096, 8)
    clock.sleep_ms(300)  # mid-way through a conversion of AIN0
    # the chip ignores OS=1 while converting: the driver must stop continuous mode first
    assert adc.read_single_shot_v("AIN1", 4.096, 128) == pytest.approx(2.0, abs=tol(2.0, 4.096))
    assert adc.read_config() & 0x0100  # single-shot mode again


def test_long_continuous_run_keeps_only_the_latest():
    clock, bus, dev, adc = make(inputs={"0": "sig_v"}, truth={"sig_v": 0.1})
    adc.start_continuous("AIN0", 0.512, 860)
    clock.advance_s(3600)
    dev.set_truth({"sig_v": 0.4})
    clock.sleep_ms(3)
    assert adc.read_continuous_v() == pytest.approx(0.4, abs=tol(0.4, 0.512, 6))
    assert dev.counters["conversions"] <= 4  # not three million: only results someone can see


@pytest.mark.parametrize("data_rate_error", [-0.1, 0.0, 0.1])
def test_single_shot_is_three_transactions_on_any_chip_in_spec(data_rate_error):
    clock, bus, dev, adc = make(inputs={"0": 0.3}, data_rate_error=data_rate_error)
    n = bus.counters["transactions"]
    assert adc.read_single_shot_v("AIN0", 0.512, 8) == pytest.approx(0.3, abs=tol(0.3, 0.512))
    assert bus.counters["transactions"] - n == 3  # write Config, read Config, pointer + result
    n = bus.counters["transactions"]
    adc.read_single_shot_v("AIN0", 0.512, 8)  # again: Config is written, so read where it points
    assert bus.counters["transactions"] - n == 3


def test_convert_v_is_read_single_shot_v_with_its_word_made_once():
    # Two chips drawn alike (same seed): the same results, three transactions a conversion.
    _, bus_a, _, by_args = make(inputs={"0": 0.31, "1": 0.27}, seed=5)
    _, bus_w, _, by_word = make(inputs={"0": 0.31, "1": 0.27}, seed=5)
    words = [ads.config_word(mux, 0.512, 8) for mux in ("AIN0", "AIN1")]
    for i in range(3):
        for mux, word in zip(("AIN0", "AIN1"), words):
            assert by_word.convert_v(word) == by_args.read_single_shot_v(mux, 0.512, 8)
    assert bus_w.counters["transactions"] == bus_a.counters["transactions"] == 3 * 2 * 3


@pytest.mark.parametrize("word", [0x4903, 0xC803, 0x1C903, -1, 0.5, None])
def test_convert_v_refuses_a_word_that_does_not_start_a_single_shot(word):
    clock, bus, dev, adc = make(inputs={"0": 0.3})
    with pytest.raises(ValueError, match="word"):
        adc.convert_v(word)
    assert bus.counters["transactions"] == 0


def test_a_chip_slower_than_spec_is_polled_until_done():
    clock, bus, dev, adc = make(inputs={"0": 0.3})
    dev.data_rate_error = -0.2  # out of spec: 156 ms at 8 SPS
    assert adc.read_single_shot_v("AIN0", 0.512, 8) == pytest.approx(0.3, abs=tol(0.3, 0.512))
    assert dev.counters["conversions"] == 1


def test_power_cycle_mid_conversion_is_a_device_error():
    clock, bus, dev, adc = make(inputs={"0": 1.0})
    adc.start_single_shot("AIN0", 0.512, 8)
    dev.power_cycle()  # Config back to 0x8583: the result would be the reset register's 0
    with pytest.raises(DeviceError, match="reset"):
        adc.wait_conversion(8)


def test_conversion_that_never_ends_is_a_device_error():
    class Stalled(SimADS1115):
        def conversion_us(self, data_rate_sps):
            return 10**9  # oscillator stopped

    clock = VirtualClock()
    bus = SimI2CBus(clock)
    bus.attach(Stalled(inputs={"0": 1.0}))
    adc = ads.ADS1115(bus, clock)
    t0 = clock.now_us
    with pytest.raises(DeviceError, match="OS bit"):
        adc.read_single_shot_v("AIN0", 4.096, 8)
    assert (clock.now_us - t0) / 1000 < 250  # bounded: 126 ms + 20 polls of 3 ms + bus time


def test_nack_fault_is_enodev():
    clock, bus, dev, adc = make(inputs={"0": 1.0})
    dev.add_fault(Fault("nack"))
    with pytest.raises(OSError) as e:
        adc.read_single_shot_v("AIN0", 4.096, 128)
    assert e.value.errno == errno.ENODEV


def test_stuck_bus_is_etimedout_until_recovered():
    clock, bus, dev, adc = make(inputs={"0": 1.0})
    bus.add_fault(Fault("stuck_bus", recoverable=True))
    with pytest.raises(OSError) as e:
        adc.read_single_shot_v("AIN0", 4.096, 128)
    assert e.value.errno == errno.ETIMEDOUT
    bus.recover()
    assert adc.read_single_shot_v("AIN0", 4.096, 128) == pytest.approx(1.0, abs=tol(1.0, 4.096))


def test_clock_stretch_short_costs_time_long_times_out():
    clock, bus, dev, adc = make(inputs={"0": 1.0})
    f = dev.add_fault(Fault("stretch", magnitude=5.0))
    t0 = clock.now_us
    assert adc.read_single_shot_v("AIN0", 4.096, 860) == pytest.approx(1.0, abs=tol(1.0, 4.096))
    assert clock.now_us - t0 >= 4 * 5000  # at least four stretched transactions
    f.magnitude = 80.0  # beyond the 50 ms bus timeout
    with pytest.raises(OSError) as e:
        adc.read_single_shot_v("AIN0", 4.096, 860)
    assert e.value.errno == errno.ETIMEDOUT


def test_model_refuses_what_it_does_not_implement():
    clock, bus, dev, adc = make()
    with pytest.raises(UnknownCommand):
        bus.writeto(A, bytes([0x04]))
    with pytest.raises(UnknownCommand):
        bus.writeto(A, bytes([0x01, 0x85]))  # half a register write
    with pytest.raises(UnknownCommand):
        bus.readfrom(A, 3)
    bus.writeto(A, bytes([0x00, 0x12, 0x34]))  # Conversion is read-only: ignored
    assert raw_read(bus, 0x00) == 0
    bus.writeto(A, bytes([0x02, 0x12, 0x34]))
    assert raw_read(bus, 0x02) == 0x1234


def test_addresses_and_bad_inputs():
    for a in (0x48, 0x49, 0x4A, 0x4B):
        clock, bus, dev, adc = make(address=a)
        assert bus.scan() == [a] and adc.read_config() == 0x8583
    with pytest.raises(ValueError, match="address"):
        SimADS1115(address=0x50)
    with pytest.raises(ValueError, match="inputs"):
        SimADS1115(inputs={"4": 1.0})
    with pytest.raises(ValueError, match="AIN0 is wired twice"):
        SimADS1115(inputs={"0": 1.0, "electrode": {}, "we": 0, "ae": 1})
    with pytest.raises(ValueError, match="data_rate_error"):
        SimADS1115(data_rate_error=0.2)


def test_noise_is_small_seeded_and_repeatable():
    def readings(seed):
        clock, bus, dev, adc = make(inputs={"0": 0.25}, seed=seed, data_rate_error=None)
        return [adc.read_single_shot_v("AIN0", 0.512, 860) for _ in range(50)], dev

    a, dev = readings(7)
    b, _ = readings(7)
    c, _ = readings(8)
    assert a == b and a != c
    lsb = ads.lsb_v(0.512)
    assert max(a) - min(a) <= 12 * lsb  # σ 1.5 LSB at 860 SPS
    assert len(set(a)) > 1
    assert abs(dev.data_rate_error) <= 0.1


def test_spec_is_json_and_builds_through_the_registry():
    spec = {"model": "ads1115", "address": 0x49, "seed": 3,
            "inputs": dict(NO2_ISB_INPUTS, electrode={"zero_algorithm": 3, "noise_ppb": 0}),
            "truth": {"no2_ppb": 30.0, "temperature_c": 15.0}}
    dev = build_device(json.loads(json.dumps(spec)))
    assert dev.address == 0x49 and dev.electrode.zero_algorithm == 3
    assert json.loads(json.dumps(dev.electrode_sheet)) == dev.electrode_sheet
