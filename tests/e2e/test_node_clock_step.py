"""RELIABILITY.md's "clock jump" on a node: the real firmware (``civicedge firmware build``, run
by simulators/mpy/board.py through deep-sleep wakes) notices its RTC stepping +30 min (a wall
jump injected on the simulator, which the board's RTC follows, ticks unmoved) and from then on
logs its values ``time_unsynced`` with the raw, stepped ``t``; readings before the step stay
``ok``. The same for a step back by a day, and on a light-sleeping (mains) node, which
compares ticks instead of the deep sleep it asked for. Asserted on what the gateway stub
received over the serial link."""

import pytest

from protocol import quality
from simulators.i2c_server import SimServer
from tests.e2e.nodeharness import (
    KEY, ROOM, ROOMY_HEAP, SCD41, LinkStub, build_node, finish, kind, node_config, start_node, wait_for)

INTERVAL_S = 60
WAKES = 7


def _flags(rec):
    return {f for _, _, f in rec["values"]}


def _run(tmp_path, jump_s, sets, wakes, extra=()):
    """Build with ``sets``, run (``--rtc-synced``), step the RTC by ``jump_s`` once the gateway
    has two readings; returns (run, [(device, epoch, record)] in key order)."""
    build = build_node(tmp_path / "build", sets=["interval_s=%d" % INTERVAL_S, "status_every_n_cycles=1"] + sets)
    with SimServer() as srv, LinkStub({node_config(build)["device_id"]: KEY}) as gw:
        srv.rig.setup([{"model": "scd4x", "address": SCD41, "truth": ROOM, "seed": 21}])

        def readings():
            return [r for _, _, r in gw.unique_records() if kind(r) == "reading"]

        proc = start_node(build, tmp_path / "flash.img", gw, srv, wakes, heapsize=ROOMY_HEAP["heapsize"],
                          extra=["--rtc-synced"] + list(extra))
        try:
            assert wait_for(lambda: len(readings()) >= 2, 180, proc)
            with srv.lock:
                srv.rig.wall(jump_s)
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
        run = finish(proc)
        records = sorted(gw.unique_records(), key=lambda x: (x[1], x[2]["seq"]))
    assert run.rc == 0 and run.summary is not None, run.text()
    return run, records


def _assert_flagged_from_the_step(records, jump_s):
    reads = [r for _, _, r in records if kind(r) == "reading"]
    gaps = [b["t"] - a["t"] for a, b in zip(reads, reads[1:])]
    jumped = [i + 1 for i, g in enumerate(gaps) if abs(g - INTERVAL_S - jump_s) < 600]
    assert len(jumped) == 1, gaps  # one step, after the first two readings and before the last
    k = jumped[0]
    assert 2 <= k < len(reads), gaps
    for r in reads[:k]:  # before the step: ok, never time_unsynced
        assert quality.OK in _flags(r) and quality.TIME_UNSYNCED not in _flags(r), r
    for r in reads[k:]:  # from the step on: the raw t kept, nothing ok any more
        assert r["t"] is not None
        assert quality.TIME_UNSYNCED in _flags(r) and quality.OK not in _flags(r), r
    statuses = [r for _, _, r in records if kind(r) == "status"]
    assert "clock_steps" not in statuses[0]["counters"]
    last = statuses[-1]["counters"]
    assert (last["clock_steps"], last["clock_unsynced"]) == (1, 1), last


@pytest.mark.parametrize("jump_s", [1800, -86400])  # +30 min (the fleet's finding), -1 day
def test_rtc_step_across_deep_sleep_flags_later_records_time_unsynced(tmp_path, jump_s):
    run, records = _run(tmp_path, jump_s, [], WAKES)
    assert run.summary["boots"] == WAKES + 1  # the first boot, then the wakes
    assert len([r for _, _, r in records if kind(r) == "reading"]) == WAKES + 1
    _assert_flagged_from_the_step(records, jump_s)


def test_rtc_step_on_a_light_sleeping_node_flags_later_records_time_unsynced(tmp_path):
    run, records = _run(tmp_path, 1800, ["power.sleep=light"], 0, ["--until-s", str(8 * INTERVAL_S)])
    assert run.summary["end"] == "time" and run.summary["boots"] == 1, run.text()
    _assert_flagged_from_the_step(records, 1800)
