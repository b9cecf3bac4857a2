"""The real node firmware, built with `civicedge firmware build`, booting from a littlefs
image in the MicroPython unix port (simulators/mpy/board.py) through many deep-sleep wakes,
reading a simulated SCD41 and sending over its serial link to a gateway-side stub that
decodes every frame with the device key and the SenML pack with cbor2."""

import json

import pytest

from civicedge import firmware_build as fb
from protocol import quality
from simulators.i2c_server import SimServer
from simulators.mpyrun import REPO, run_micropython
from simulators.serial_gateway import SerialGatewayStub

DEVICE = "sch1-rm12-co2"
KEY = bytes(range(16))
ROOM = {"co2_ppm": 812.0, "temperature_c": 21.5, "rh_percent": 44.0}


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("fw") / "flash"
    fb.build("esp32-devkitc", "classroom-co2", DEVICE, out, link="serial",
             sets=["power.sleep=deep", "status_every_n_cycles=5"])
    (out / "secrets.json").write_text(json.dumps({"device_key_hex": KEY.hex()}))
    return out


def boot(build, tmp_path, gateway, wakes, server, extra=()):
    image = tmp_path / "flash.img"
    args = [str(REPO / "simulators" / "mpy" / "board.py"), "--flash", str(image), "--wakes", str(wakes)]
    if not image.exists():
        args += ["--install", str(build)]
    rc, out, err = run_micropython(args + list(extra), server=server, timeout_s=240, heapsize="256K",
                                   env={"CIVICEDGE_UART2": gateway.port_path})
    summary = json.loads([line for line in out.splitlines() if line.startswith("BOARD ")][-1][6:])
    return rc, out, err, summary


def test_every_reading_arrives_authenticated_in_order(build, tmp_path):
    with SimServer() as srv, SerialGatewayStub({DEVICE: KEY}) as gw:
        srv.rig.setup([{"model": "scd4x", "truth": ROOM, "seed": 3}])
        rc, out, err, summary = boot(build, tmp_path, gw, 20, srv)
        assert summary["end"] == "wakes", out + err
        readings = [(e, r) for d, e, r in gw.records if r.get("kind", "reading") == "reading"]
        statuses = [r for d, e, r in gw.records if r.get("kind") == "status"]
    assert gw.counters["bad_frames"] == 0 and gw.counters["bad_packs"] == 0
    assert len(readings) >= 20
    keys = [(e, r["seq"]) for e, r in readings + [(e, s) for d, e, s in gw.records if s.get("kind") == "status"]]
    assert len(set(keys)) == len(keys)  # nothing arrived twice
    for epoch, rec in readings:
        values = {q: (v, f) for q, v, f in rec["values"]}
        co2, flag = values["co2_ppm"]
        assert flag in (quality.OK, quality.TIME_UNSYNCED)
        assert abs(co2 - ROOM["co2_ppm"]) <= 50 + 0.025 * ROOM["co2_ppm"]
    # a deep-sleep wake resumes the epoch (RTC memory): one epoch, seqs contiguous in it
    epochs = sorted(set(e for e, r in readings))
    assert epochs == [1]
    seqs = sorted(s for e, s in keys)
    assert seqs == list(range(len(seqs)))
    assert statuses and all("count.boots" in str(s) or s.get("counters") for s in statuses)
    # memory does not grow across wakes
    free = summary["mem_free"]
    assert min(free[-5:]) >= min(free[1:6]) - 2048
