"""ADS1115 register map and conversions against REFERENCE.md §3.1."""

import pytest

from drivers import ads1115 as ads


@pytest.mark.parametrize(
    "mux,fsr_v,sps,word",
    [
        ("AIN0", 4.096, 128, 0xC383),  # REFERENCE §3.1 [calc]
        ("AIN0", 0.512, 8, 0xC903),
        ("AIN1", 0.512, 8, 0xD903),
        ("ain0-gnd", 4.096, 128, 0xC383),  # alias, case-insensitive
    ],
)
def test_reference_config_words(mux, fsr_v, sps, word):
    assert ads.config_word(mux, fsr_v, sps, single_shot=True, start=True) == word


def test_reset_word_is_the_reset_fields():
    # 0x8583 = OS 1, MUX 000 (AIN0-AIN1), PGA 010 (±2.048 V), MODE 1, DR 100 (128 SPS),
    # comparator 0/0/0, COMP_QUE 11 (off).
    assert ads.CONFIG_RESET == 0x8583
    assert ads.config_word("AIN0-AIN1", 2.048, 128) == 0x8583
    assert ads.decode_config(0x8583) == {
        "os": 1, "mux": "AIN0-AIN1", "fsr_v": 2.048, "pga": 2, "single_shot": True,
        "data_rate_sps": 128, "comp_mode": 0, "comp_pol": 0, "comp_lat": 0, "comp_que": 3,
    }


def test_continuous_no_start_and_comparator_bits():
    # AIN2-AIN3 (011), ±1.024 (011), continuous (0), 860 SPS (111), COMP_MODE/POL/LAT 1, QUE 00:
    # 0 011 011 0 111 1 1 1 00 = 0x36FC
    w = ads.config_word("AIN2-AIN3", 1.024, 860, single_shot=False, start=False,
                        comp_mode=1, comp_pol=1, comp_lat=1, comp_que=0)
    assert w == 0x36FC


@pytest.mark.parametrize(
    "fsr_v,lsb_uv",
    [(6.144, 187.5), (4.096, 125.0), (2.048, 62.5), (1.024, 31.25), (0.512, 15.625), (0.256, 7.8125)],
)
def test_lsb_sizes(fsr_v, lsb_uv):
    assert ads.lsb_v(fsr_v) * 1e6 == pytest.approx(lsb_uv, abs=1e-9)
    assert ads.raw_to_v(1, fsr_v) * 1e6 == pytest.approx(lsb_uv, abs=1e-9)


def test_pga_codes_5_to_7_are_all_0256():
    for pga in (5, 6, 7):
        assert ads.decode_config(pga << 9)["fsr_v"] == 0.256
        assert ads.decode_config(pga << 9)["pga"] == pga


@pytest.mark.parametrize("sps,ms", [(8, 125.0), (16, 62.5), (128, 7.8125), (250, 4.0), (860, 1000 / 860)])
def test_conversion_time_is_one_over_dr(sps, ms):
    assert ads.conversion_time_ms(sps) == pytest.approx(ms)


def test_single_shot_ms_waits_for_the_slowest_chip_in_spec():
    assert ads.single_shot_ms(8) == 140  # 138.89 ms (125 / 0.9) + 25 µs, rounded up, + 1
    assert ads.single_shot_ms(128) == 10  # 8.68 + 0.025 -> 9, + 1
    assert ads.single_shot_ms(860) == 3  # 1.29 + 0.025 -> 2, + 1


def test_ready_in_ms_adds_wakeup_and_rounds_up():
    assert ads.ready_in_ms(8) == 126  # 125 ms + 25 µs
    assert ads.ready_in_ms(250) == 5  # 4.025
    assert ads.ready_in_ms(860) == 2  # 1.188


def test_raw_volts_conversions_and_clipping():
    assert ads.raw_to_v(32767, 4.096) == pytest.approx(4.096 - 125e-6)
    assert ads.raw_to_v(-32768, 4.096) == -4.096
    assert ads.v_to_raw(1.2, 4.096) == 9600  # 1.2 / 125 µV
    assert ads.v_to_raw(-0.25, 0.512) == -16000
    assert ads.v_to_raw(5.0, 4.096) == 32767  # beyond +FS saturates
    assert ads.v_to_raw(-5.0, 4.096) == -32768
    for raw in (-32768, -1, 0, 1, 12345, 32767):
        assert ads.v_to_raw(ads.raw_to_v(raw, 0.256), 0.256) == raw


def test_int16_from_bytes():
    assert ads.int16_from_bytes(0x80, 0x00) == -32768
    assert ads.int16_from_bytes(0xFF, 0xFF) == -1
    assert ads.int16_from_bytes(0x7F, 0xFF) == 32767
    assert ads.int16_from_bytes(0x25, 0x80) == 9600


def test_encode_decode_round_trip_all_mux_fsr_dr():
    for mux in ads.MUX_NAMES:
        for fsr in ads.FSR_V:
            for sps in ads.DATA_RATES_SPS:
                f = ads.decode_config(ads.config_word(mux, fsr, sps))
                assert (f["mux"], f["fsr_v"], f["data_rate_sps"], f["os"], f["single_shot"]) == (
                    mux, fsr, sps, 1, True)


def test_gain_names():
    assert ads.fsr_for_gain(2 / 3) == 6.144
    assert ads.fsr_for_gain(1) == 4.096
    assert ads.fsr_for_gain(16) == 0.256


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"mux": "AIN4"}, "mux"),
        ({"mux": "AIN1-AIN0"}, "mux"),  # not a pair the MUX has
        ({"mux": 4}, "mux"),  # ints are ambiguous (code or pin?): refused
        ({"fsr_v": 3.3}, "fsr_v"),
        ({"fsr_v": "4.096"}, "fsr_v"),
        ({"data_rate_sps": 100}, "data_rate_sps"),
        ({"comp_que": 4}, "comp_que"),
        ({"start": 2}, "start"),
        ({"single_shot": "yes"}, "single_shot"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    args = {"mux": "AIN0", "fsr_v": 4.096, "data_rate_sps": 128}
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        ads.config_word(**args)


def test_other_value_errors_name_the_argument():
    with pytest.raises(ValueError, match="gain"):
        ads.fsr_for_gain(3)
    with pytest.raises(ValueError, match="word"):
        ads.decode_config(0x10000)
    with pytest.raises(ValueError, match="data_rate_sps"):
        ads.conversion_time_ms(0)
    with pytest.raises(ValueError, match="address"):
        ads.ADS1115(bus=None, clock=None, address=0x47)
    d = ads.ADS1115(bus=None, clock=None, address=0x4B)
    with pytest.raises(ValueError, match="pointer"):
        d.read_register(4)
