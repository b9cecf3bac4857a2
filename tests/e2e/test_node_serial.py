"""The real node firmware, built with `civicedge firmware build`, booting from a littlefs
image in the MicroPython unix port (simulators/mpy/board.py) through many deep-sleep wakes,
reading a simulated SCD41 and sending over its serial link to a gateway-side stub that
decodes every frame with the device key and the SenML pack with cbor2."""

import pytest

from protocol import quality
from simulators.i2c_server import SimServer
from simulators.serial_gateway import SerialGatewayStub
from tests.e2e.nodeharness import DEVICE, KEY, ROOM, build_node, run_node


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return build_node(tmp_path_factory.mktemp("fw") / "flash", sets=["status_every_n_cycles=5"])


def boot(build, tmp_path, gateway, wakes, server, extra=()):
    run = run_node(build, tmp_path / "flash.img", gateway, server, wakes, heapsize="320K", extra=extra)
    assert run.summary is not None, run.text()
    return run.rc, run.out, run.err, run.summary


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
