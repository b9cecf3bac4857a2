"""Mains nodes as deployed: light sleep between cycles, one boot for the whole run (no deep
sleep resets), bounded by virtual time (`board.py --until-s`). Classroom CO2 on serial, and
street NO2 logging 15-minute means of 1-minute samples."""

import json

from civicedge import firmware_build as fb
from simulators.i2c_server import SimServer
from simulators.serial_gateway import SerialGatewayStub
from tests.e2e.nodeharness import DEVICE, KEY, ROOM, kind, run_node, values_of


def build_mains(out, profile, device, sets=(), calibration=None):
    fb.build("esp32-devkitc", profile, device, out, link=None if profile == "classroom-co2" else "mqtt",
             sets=list(sets), calibration=calibration)
    (out / "secrets.json").write_text(json.dumps({"device_key_hex": KEY.hex()}))
    return out


def test_a_classroom_node_light_sleeps_through_two_hours_in_one_boot(tmp_path):
    build = build_mains(tmp_path / "fw", "classroom-co2", DEVICE)
    cfg = json.loads((build / "config.json").read_text())
    assert cfg["power"]["sleep"] == "light"
    hours = 2
    with SimServer() as srv, SerialGatewayStub({DEVICE: KEY}) as gw:
        srv.rig.setup([{"model": "scd4x", "truth": ROOM, "seed": 5}])
        run = run_node(build, tmp_path / "flash.img", gw, srv, 0, extra=["--until-s", str(hours * 3600)])
        readings = [(e, r) for d, e, r in gw.records if kind(r) == "reading"]
    assert run.summary["end"] == "time", run.out + run.err
    assert run.summary["boots"] == 1 and sum(run.summary["resets"].values()) == 0
    expected = hours * 3600 // cfg["interval_s"]
    assert expected - 2 <= len(readings) <= expected + 1
    assert [r["seq"] for e, r in readings] == sorted(r["seq"] for e, r in readings)
    # a mains node waits for its sensors awake (only a deep-sleeping node's sensor clock naps)
    assert all("nap_ms" not in r["counters"] for d, e, r in gw.records if kind(r) == "status")
    for e, r in readings:
        co2, flag = values_of(r)["co2_ppm"]
        assert abs(co2 - ROOM["co2_ppm"]) <= 50 + 0.025 * ROOM["co2_ppm"]


def test_a_street_no2_node_logs_fifteen_minute_means_of_its_minute_samples(tmp_path):
    from simulators.ads1115 import SimADS1115

    device = "high-st-no2-01"
    truth = {"no2_ppb": 42.0, "temperature_c": 11.0}
    electrode = {"electrode": {"zero_algorithm": 1, "noise_ppb": 0.0}, "we": 0, "ae": 1}
    sheet = SimADS1115(0x48, inputs=electrode, seed=9).electrode_sheet  # the sensor's own sheet
    (tmp_path / "sheet.json").write_text(json.dumps(sheet))
    # street-no2 is LoRaWAN or MQTT; its board's UART carries the serial link here instead
    out = tmp_path / "fw"
    fb.build("esp32-devkitc-rak3272s", "street-no2", device, out, link=None, calibration=tmp_path / "sheet.json",
             sets=["link.type=serial", "link.modem=null", "link.lorawan=null"])
    (out / "secrets.json").write_text(json.dumps({"device_key_hex": KEY.hex()}))
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["interval_s"], cfg["mean_period_s"], cfg["power"]["sleep"]) == (60, 900, "light")
    with SimServer() as srv, SerialGatewayStub({device: KEY}) as gw:
        srv.rig.setup([{"model": "ads1115", "address": 0x48, "inputs": electrode, "truth": truth, "seed": 9},
                       {"model": "tmp117", "address": 0x49, "truth": truth, "seed": 9}])
        run = run_node(out, tmp_path / "flash.img", gw, srv, 0, extra=["--until-s", str(3600 + 120)])
        means = [r for d, e, r in gw.records if kind(r) == "reading"]
    assert run.summary["end"] == "time", run.out + run.err
    assert len(means) == 4  # an hour of 1-minute samples makes four 15-minute means
    for r in means:
        v = values_of(r)
        assert abs(v["no2_ppb"][0] - truth["no2_ppb"]) <= 2.0, v
        assert abs(v["temperature_c"][0] - truth["temperature_c"]) <= 0.1, v
        assert abs(v["no2_ugm3"][0] - v["no2_ppb"][0] * 1.91) <= 0.05 * v["no2_ppb"][0], v
