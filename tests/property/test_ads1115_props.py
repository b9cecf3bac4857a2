"""Hypothesis properties of the ADS1115 register map, and the driver against a device that
answers arbitrary bytes."""

import errno

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import ads1115 as ads
from drivers.errors import DriverError
from simulators.clock import VirtualClock
from simulators.i2c import Nack, SimI2CBus, SimI2CDevice

BIT = st.sampled_from([0, 1])


@given(
    mux=st.sampled_from(ads.MUX_NAMES),
    fsr_v=st.sampled_from(ads.FSR_V),
    sps=st.sampled_from(ads.DATA_RATES_SPS),
    single_shot=st.booleans(),
    start=st.booleans(),
    comp_mode=BIT,
    comp_pol=BIT,
    comp_lat=BIT,
    comp_que=st.integers(0, 3),
)
def test_encode_then_decode_gives_the_fields(mux, fsr_v, sps, single_shot, start, comp_mode,
                                            comp_pol, comp_lat, comp_que):
    word = ads.config_word(mux, fsr_v, sps, single_shot=single_shot, start=start,
                           comp_mode=comp_mode, comp_pol=comp_pol, comp_lat=comp_lat,
                           comp_que=comp_que)
    assert 0 <= word <= 0xFFFF
    f = ads.decode_config(word)
    assert f["mux"] == mux and f["fsr_v"] == fsr_v and f["data_rate_sps"] == sps
    assert f["single_shot"] == single_shot and f["os"] == int(start)
    assert (f["comp_mode"], f["comp_pol"], f["comp_lat"], f["comp_que"]) == (
        comp_mode, comp_pol, comp_lat, comp_que)


def _encode(f):
    return ads.config_word(f["mux"], f["fsr_v"], f["data_rate_sps"], single_shot=f["single_shot"],
                           start=f["os"], comp_mode=f["comp_mode"], comp_pol=f["comp_pol"],
                           comp_lat=f["comp_lat"], comp_que=f["comp_que"])


def test_decode_then_encode_every_word():
    # Exhaustive over all 65536 words: every field combination. PGA codes 6 and 7 are
    # further ±0.256 V codes, so they come back as code 5.
    for word in range(0x10000):
        pga = (word >> 9) & 7
        canonical = word if pga <= 5 else (word & ~(7 << 9)) | (5 << 9)
        assert _encode(ads.decode_config(word)) == canonical


@given(raw=st.integers(-32768, 32767), fsr_v=st.sampled_from(ads.FSR_V))
def test_raw_volts_round_trip(raw, fsr_v):
    assert ads.v_to_raw(ads.raw_to_v(raw, fsr_v), fsr_v) == raw


class _FaultyADC(SimI2CDevice):
    """Answers every read with bytes Hypothesis chooses: sometimes the written Config with
    a random OS bit (so the driver gets past its checks), else anything; NACKs at random."""

    def __init__(self, data):
        super().__init__(0x48)
        self.data = data
        self.pointer = 0
        self.config = 0

    def on_write(self, data):
        if self.data.draw(st.booleans(), label="nack write"):
            raise Nack("faulty")
        if data:
            self.pointer = data[0]
        if len(data) == 3 and data[0] == 1:
            self.config = data[1] << 8 | data[2]

    def on_read(self, n):
        if self.data.draw(st.booleans(), label="nack read"):
            raise Nack("faulty")
        if n == 2 and self.pointer == 1 and self.data.draw(st.booleans(), label="plausible"):
            word = (self.config & 0x7FFF) | (0x8000 if self.data.draw(st.booleans(), label="os") else 0)
            return bytes((word >> 8, word & 0xFF))
        return self.data.draw(st.binary(min_size=n, max_size=n), label="bytes")


@settings(max_examples=200, deadline=None)
@given(data=st.data(), sps=st.sampled_from(ads.DATA_RATES_SPS), fsr_v=st.sampled_from(ads.FSR_V))
def test_faulty_device_raises_only_documented_errors(data, sps, fsr_v):
    clock = VirtualClock()
    bus = SimI2CBus(clock)
    bus.attach(_FaultyADC(data))
    adc = ads.ADS1115(bus, clock)
    for call, args in (
        (adc.read_single_shot_v, ("AIN0", fsr_v, sps)),
        (adc.is_conversion_ready, ()),
        (adc.read_conversion_raw, ()),
        (adc.start_continuous, ("AIN1-AIN3", fsr_v, sps)),
        (adc.read_continuous_v, ()),
    ):
        try:
            result = call(*args)
        except OSError as e:
            assert e.errno == errno.ENODEV
            continue
        except DriverError:
            continue
        if call is adc.read_single_shot_v or call is adc.read_continuous_v:
            assert -fsr_v <= result < fsr_v
        elif call is adc.read_conversion_raw:
            assert -32768 <= result <= 32767
