"""Durability of the real node firmware, end to end: the build of `civicedge firmware build`
booting from a littlefs image in the MicroPython unix port (simulators/mpy/board.py), sending
over its serial link to a gateway-side stub (tests/e2e/nodeharness.py).

- hundreds of deep-sleep wakes at an ESP32's free heap without memory growing;
- power cuts (SIGKILL of the board process) at random moments, mid log-write included:
  the image always mounts, nothing logged is lost, ``(boot_epoch, seq)`` never repeats and
  the boot epoch goes up at every power-on;
- a configuration file replaced while the power is cut: old or new, never partial;
- the link down for a simulated week: the log stays within its bound, the gap record is
  exact, and everything still held arrives in order when the link returns.

Wall time decides where each power cut lands; nothing asserts on wall time.
"""

import hashlib
import json
import random
import signal
import time

import pytest

from protocol import quality
from simulators.i2c_server import SimServer
from simulators.mpyrun import run_micropython
from tests.e2e.nodeharness import (
    DEVICE, KEY, LARGE_HEAP, ROOM, ROOMY_HEAP, SCD41, LinkStub, build_node, cut_power, finish,
    inspect_image, kind, node_config, run_node, start_node, start_node_writer, values_of, wait_for)


def _co2_ok(value):
    # SCD41 accuracy ±(50 ppm + 2.5 %) at 400-1000 ppm (REFERENCE §1): the simulator stays inside it
    return value is not None and abs(value - ROOM["co2_ppm"]) <= 50 + 0.025 * ROOM["co2_ppm"]


def _no_crash(run, what):
    """The first assertion of a run: the firmware never died (MemoryError, another exception,
    a watchdog reset), with the evidence in the message."""
    s = run.summary
    text = run.out + run.err
    crashes = text.count("Traceback")
    assert s is not None and crashes == 0 and s["resets"]["wdt"] == 0, (
        "FIRMWARE BUG (%s): %d tracebacks (%d MemoryError), %s watchdog resets in %s boots; last one:\n%s"
        % (what, crashes, text.count("MemoryError"), s and s["resets"]["wdt"], s and s["boots"],
           text[text.rfind("Traceback"):][:1500] if crashes else run.text(1500)))


# -- 1. memory over hundreds of wakes ------------------------------------------------------------
WAKES = 300


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    return build_node(tmp_path_factory.mktemp("classroom") / "flash")


# The firmware does not yet fit an ESP32's ~100 KB heap as .mpy loaded into RAM (on this
# 64-bit port it needs ~180 KB free: `scripts/bench heap`); freezing the modules into the
# firmware image is the open work (issue 3 note). Memory growth is checked where it runs.
@pytest.mark.parametrize("heap", [ROOMY_HEAP], ids=["roomy-320K"])
def test_hundreds_of_wakes_without_memory_growth(classroom, tmp_path, heap):
    with SimServer() as srv, LinkStub({DEVICE: KEY}) as gw:
        srv.rig.setup([{"model": "scd4x", "truth": ROOM, "seed": 5}], bus={"timeout_ms": 200})
        run = run_node(classroom, tmp_path / "flash.img", gw, srv, WAKES, heapsize=heap["heapsize"],
                       heap_free=heap["heap_free"], timeout_s=150)
        records = gw.unique_records()
    _no_crash(run, "heap: with -X heapsize=%s --heap-free %s the firmware does not fit the heap it is "
                   "given; %d of %d readings delivered"
              % (heap["heapsize"], heap["heap_free"], sum(1 for d, e, r in records if kind(r) == "reading"),
                 WAKES + 1))
    s = run.summary
    assert s["end"] == "wakes" and s["resets"]["deepsleep"] == WAKES + 1 and s["boots"] == WAKES + 1, run.text()

    # every wake's reading arrived (one per boot), exactly once, numbered without a hole
    readings = [(e, r) for d, e, r in records if kind(r) == "reading"]
    assert len(readings) == WAKES + 1
    assert gw.counters["bad_frames"] == 0 and gw.counters["bad_packs"] == 0
    keys = sorted((e, r["seq"]) for d, e, r in records)
    assert [k[0] for k in keys] == [keys[0][0]] * len(keys)  # deep-sleep wakes resume the epoch
    assert [k[1] for k in keys] == list(range(len(keys)))
    assert all(_co2_ok(values_of(r)["co2_ppm"][0]) for e, r in readings)

    # memory does not trend down: the latest 20 boots against the first 20 after the first
    # (the first boot interns the firmware's strings once)
    free = s["mem_free"]
    assert len(free) >= 60, s
    first, last = free[1:21], free[-20:]
    assert min(last) >= min(first) - 512 and sum(last) / 20 >= sum(first) / 20 - 256, (
        "heap shrinks across wakes: first %s ... last %s" % (first, last))


# -- 2. power cuts -------------------------------------------------------------------------------
CUTS = 20
# quick wakes (5 s interval, a short ack wait) so a cut lands in a wake, often in its flash write
POWERCUT_SETS = ["interval_s=5", "link.serial.ack_timeout_ms=300", "log.max_bytes=16384",
                 "log.segment_bytes=2048"]


def _phase(cut):
    """The gateway side during cut ``cut``: acking; receiving without acking (the node keeps
    sending the same records); or the link down (records pile up on flash only)."""
    return "ack" if cut < 7 or cut >= 17 else "no_ack" if cut < 12 else "down"


def _covered(key, gaps):
    return any(first <= key <= last for first, last in gaps)


def _gap_ranges(records):
    return [((r["first_epoch"], r["first_seq"]), (r["last_epoch"], r["last_seq"]))
            for d, e, r in records if kind(r) == "gap"]


def test_power_cuts_lose_nothing_logged_and_never_repeat_a_key(tmp_path):
    build = build_node(tmp_path / "fw", sets=POWERCUT_SETS)
    image = tmp_path / "flash.img"
    rng = random.Random(11)
    state = {"up": True}
    held_ever = set()  # every key the image held after some cut
    epochs = []  # the boot epoch after each cut that booted
    prev = None
    with SimServer() as srv, LinkStub({DEVICE: KEY}, link_up=lambda: state["up"]) as gw:
        srv.rig.setup([{"model": "scd4x", "truth": ROOM, "seed": 7}], bus={"timeout_ms": 200})
        for cut in range(CUTS):
            phase = _phase(cut)
            gw.ack = phase == "ack"
            state["up"] = phase != "down"
            sent_before = len(gw.frames) + gw.lost
            proc = start_node(build, image, gw, srv, 100000, heapsize=LARGE_HEAP["heapsize"])
            early = rng.random() < 0.25
            if early:  # anywhere from the interpreter's start: mount, boot, the first append
                time.sleep(rng.uniform(0.02, 0.4))
            else:  # once the node has booted and sent: in a later wake, often its flash write
                assert wait_for(lambda: len(gw.frames) + gw.lost > sent_before, 60, proc), (
                    "cut %d: the node sent nothing:\n%s" % (cut, finish(proc, 5).text()))
                time.sleep(rng.uniform(0.0, 0.6))
            run = cut_power(proc)
            assert run.rc == -signal.SIGKILL, "cut %d: the board stopped before the cut:\n%s" % (cut, run.text())
            assert "Traceback" not in run.out + run.err, "cut %d: the firmware failed:\n%s" % (cut, run.text())
            with srv.lock:
                srv.rig.power(SCD41, "cycle")  # the cut takes the sensor's supply too
            rep = inspect_image(image, build)
            assert rep["mount"] == "ok", "cut %d: the littlefs image no longer mounts: %s" % (cut, rep)
            assert rep["error"] is None, rep["error"]
            st, stats, held = rep["state"], rep["stats"], rep["held"]
            assert st["state_faults"] == 0 and stats["torn"] == 0 and stats["meta_faults"] == 0, rep
            keys = [(e, s) for e, s, k in held]
            assert keys == sorted(set(keys)), "cut %d: held keys repeat or are out of order" % cut
            assert stats["bytes"] <= stats["max_bytes"]
            held_ever.update(keys)
            if not early:
                assert st["boot_count"] > (prev["boot_count"] if prev else 0), "cut %d: no boot recorded" % cut
            if prev is not None:
                assert st["boot_count"] >= prev["boot_count"] and st["boot_epoch"] >= prev["boot_epoch"], (st, prev)
                if st["boot_count"] > prev["boot_count"]:  # the node booted in this run
                    assert st["boot_epoch"] > prev["boot_epoch"], "cut %d: a power-on reused epoch %d" % (
                        cut, st["boot_epoch"])
            if st["boot_count"] and (prev is None or st["boot_count"] > prev["boot_count"]):
                epochs.append(st["boot_epoch"])
            prev = st

        # the link back, no more cuts: the node boots from the same image and drains its log
        gw.ack, state["up"] = True, True
        run = run_node(build, image, gw, srv, 15, heapsize=LARGE_HEAP["heapsize"])
        assert run.summary is not None and run.summary["end"] == "wakes", run.text()
        final = inspect_image(image, build)
        records = list(gw.records)

    assert final["mount"] == "ok" and final["stats"]["pending"] == 0, final
    assert final["state"]["boot_epoch"] > epochs[-1]
    assert epochs == sorted(set(epochs)), "boot epochs must strictly increase: %s" % epochs

    # (boot_epoch, seq) never names two different records (a resend after a cut is the same record)
    first_copy = {}
    for d, e, r in records:
        k = (e, r["seq"])
        assert first_copy.setdefault(k, r) == r, "key %r names two records: %r and %r" % (k, first_copy[k], r)
    received = set(first_copy)
    gaps = _gap_ranges(records)
    # nothing that reached the log is lost: every key held after any cut arrived (or a gap says so)
    lost = sorted(k for k in held_ever if k not in received and not _covered(k, gaps))
    assert not lost, "logged before a cut, never delivered: %s" % lost[:20]
    # and within each epoch the seqs that arrived have no hole (a cut only skips an epoch's tail)
    by_epoch = {}
    for e, s in received:
        by_epoch.setdefault(e, []).append(s)
    for e, seqs in by_epoch.items():
        missing = [s for s in range(max(seqs) + 1) if s not in seqs and not _covered((e, s), gaps)]
        assert not missing, "epoch %d: seqs %s never arrived" % (e, missing)
    # every reading is a real one: after each power-on the node waited out the SCD41's start-up
    readings = [r for d, e, r in records if kind(r) == "reading"]
    assert all(_co2_ok(values_of(r)["co2_ppm"][0]) and values_of(r)["co2_ppm"][1] in (quality.OK, quality.TIME_UNSYNCED)
               for r in readings), [values_of(r)["co2_ppm"] for r in readings]
    print("power cuts: %d, boots seen %d, keys held at some cut %d, records received %d (%d unique), "
          "lost on the wire while down %d, bad frames %d" % (CUTS, len(epochs), len(held_ever), len(records),
                                                             len(received), gw.lost, gw.counters["bad_frames"]))


# -- 3. a configuration write cut by a power failure ---------------------------------------------
CONFIG_CUTS = 10
# Rewrites config.json (temp file + rename, as provisioning replaces it) and overrides.json
# (app.downlink.write_overrides, the firmware's own atomic write of a downlink's change),
# alternating between two versions, for ever; a line is printed only after a write returned.
_CONFIG_WRITER = """
import os, vfs
from flashdev import FileFlash
vfs.mount(vfs.VfsLfs2(FileFlash(%(image)r)), "/flash")
from firmware.app.downlink import write_overrides
CONFIGS = %(configs)r
OVERRIDES = %(overrides)r
i = 0
while True:
    i += 1
    v = i %% 2
    data = CONFIGS[v]
    with open("/flash/config.json.tmp", "wb") as f:
        for k in range(0, len(data), 128):  # many small writes: a cut can land in the middle
            f.write(data[k:k + 128])
    os.rename("/flash/config.json.tmp", "/flash/config.json")
    print("C %%d ." %% v)
    write_overrides("/flash", OVERRIDES[v])
    print("O %%d ." %% v)
"""
# Reads back what the next boot reads: the two files' hashes and the configuration the node
# would run with (config.json validated, then the overrides applied as main.py applies them).
_CONFIG_CHECK = """
import json, vfs, hashlib, binascii
from flashdev import FileFlash
try:
    vfs.mount(vfs.VfsLfs2(FileFlash(%(image)r)), "/flash")
except OSError as e:
    print("MOUNT FAIL", repr(e))
    raise SystemExit
print("MOUNT ok")
try:
    with open("/flash/config.json", "rb") as f:
        print("SHA", binascii.hexlify(hashlib.sha256(f.read()).digest()).decode())
except OSError:
    print("SHA -")
try:
    with open("/flash/overrides.json", "rb") as f:
        print("OVERRIDES", binascii.hexlify(f.read()).decode())
except OSError:
    print("OVERRIDES -")
from firmware.app import config
try:
    cfg = config.load_config("/flash/config.json")
except config.ConfigError as e:
    print("INVALID", e)
    raise SystemExit
from firmware.app.downlink import apply_overrides
cfg = apply_overrides(cfg, "/flash", config.validate)
print("RUNS", json.dumps({"interval_s": cfg["interval_s"], "status_every_n_cycles": cfg["status_every_n_cycles"]}))
"""


def _sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("heapsize", [LARGE_HEAP["heapsize"]])
def test_config_write_cut_by_power_failure_leaves_old_or_new(tmp_path, heapsize):
    build = build_node(tmp_path / "fw", sets=["interval_s=30", "link.serial.ack_timeout_ms=300"])
    cfg_a = node_config(build)
    cfg_b = dict(cfg_a, interval_s=60, status_every_n_cycles=7)
    configs = [json.dumps(c, indent=2).encode() + b"\n" for c in (cfg_a, cfg_b)]
    # the two overrides documents a downlink could leave ({"set", "base"}: app/downlink.py)
    overrides = [{"set": {"interval_s": 45}, "base": {"interval_s": 30}},
                 {"set": {"status_every_n_cycles": 9}, "base": {"status_every_n_cycles": 7}}]
    config_shas = {_sha(c): v for v, c in enumerate(configs)}
    image = tmp_path / "flash.img"
    rng = random.Random(5)
    writer = _CONFIG_WRITER % {"image": str(image), "configs": configs, "overrides": overrides}
    check = _CONFIG_CHECK % {"image": str(image)}
    seen_versions = set()
    landed = 0
    with SimServer() as srv, LinkStub({DEVICE: KEY}) as gw:
        srv.rig.setup([{"model": "scd4x", "truth": ROOM, "seed": 9}], bus={"timeout_ms": 200})
        first = run_node(build, image, gw, srv, 1, heapsize=heapsize)  # flashed: the image holds config A
        assert first.summary is not None and first.summary["end"] == "wakes", first.text()
        for cut in range(CONFIG_CUTS):
            stamp = image.stat().st_mtime_ns
            proc = start_node_writer(writer)
            # once the writer has begun writing the flash (the image file changes), a random moment
            assert wait_for(lambda: image.stat().st_mtime_ns != stamp, 30, proc, 0.001), finish(proc, 5).text()
            time.sleep(rng.uniform(0.0, 0.2))
            run = cut_power(proc)
            assert run.rc == -signal.SIGKILL, "the writer stopped by itself:\n" + run.text()
            landed += "C " in run.out  # the writer had replaced the file at least once
            rc, out, err = run_micropython(["-c", check], sim=False, timeout_s=60, heapsize="256K")
            assert rc == 0 and "MOUNT ok" in out, "cut %d: the image does not mount:\n%s\n%s" % (cut, out, err)
            lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
            assert lines["SHA"] in config_shas, (
                "cut %d: config.json is neither the old nor the new file (partial write?)" % cut)
            seen_versions.add(config_shas[lines["SHA"]])
            if lines["OVERRIDES"] != "-":
                raw = bytes.fromhex(lines["OVERRIDES"])
                try:
                    doc = json.loads(raw)
                except ValueError:
                    doc = raw
                assert doc in overrides, "cut %d: overrides.json is neither old nor new: %r" % (cut, raw)
            assert "INVALID" not in out and "RUNS " in out, out + err
            # the node boots on it and reports
            before = len(gw.records)
            boot = run_node(build, image, gw, srv, 1, heapsize=heapsize)
            _no_crash(boot, "booting with overrides.json at -X heapsize=%s, cut %d" % (heapsize, cut))
            assert boot.summary["end"] == "wakes", (
                "cut %d: the node does not boot after the config write was cut:\n%s" % (cut, boot.text()))
            assert "CONFIG ERROR" not in boot.out
            assert any(kind(r) == "reading" for d, e, r in gw.records[before:]), boot.text()
    assert landed >= CONFIG_CUTS // 2, "too few cuts landed while the writer was writing: %d" % landed
    assert seen_versions == {0, 1}, "the cuts should leave both versions at some point: %s" % seen_versions


# -- 4. the link down for a simulated week -------------------------------------------------------
WEEK_S = 7 * 86400
WEEK_INTERVAL_S = 3600  # a reading an hour: 168 wakes a week, over twice what a 16 KiB log holds
WEEK_LOG_BYTES = 16384
STATUS_EVERY = 10
AFTER_WAKES = 6  # wakes with the link back


@pytest.mark.parametrize("heapsize", [LARGE_HEAP["heapsize"]])
def test_link_down_for_a_week_bounded_log_exact_gap_then_in_order(tmp_path, heapsize):
    build = build_node(tmp_path / "fw", sets=[
        "interval_s=%d" % WEEK_INTERVAL_S, "log.max_bytes=%d" % WEEK_LOG_BYTES, "log.segment_bytes=2048",
        "status_every_n_cycles=%d" % STATUS_EVERY, "link.serial.ack_timeout_ms=100"])
    wakes = WEEK_S // WEEK_INTERVAL_S + AFTER_WAKES
    with SimServer() as srv:
        srv.rig.setup([{"model": "scd4x", "truth": ROOM, "seed": 13}], bus={"timeout_ms": 200})
        back_at = srv.rig.now_s() + WEEK_S
        with LinkStub({DEVICE: KEY}, link_up=lambda: srv.rig.now_s() >= back_at) as gw:
            run = run_node(build, tmp_path / "flash.img", gw, srv, wakes, heapsize=heapsize)
            final = inspect_image(tmp_path / "flash.img", build)
            arrived = list(gw.records)
    _no_crash(run, "a week's backlog at -X heapsize=%s" % heapsize)
    s = run.summary
    assert s["end"] == "wakes" and s["boots"] == wakes + 1, run.text()
    assert gw.lost >= WEEK_S // WEEK_INTERVAL_S - 1  # a frame a wake was lost while the link was down

    # what the node produced: one reading per wake, a status record every STATUS_EVERY cycles
    cycles = s["boots"]
    produced = cycles + sum(1 for c in range(1, cycles + 1) if c % STATUS_EVERY == 1 % STATUS_EVERY)
    first_copy, order = {}, []
    for d, e, r in arrived:
        k = (e, r["seq"])
        if k not in first_copy:
            first_copy[k] = r
            order.append(k)
    assert order == sorted(order), "records did not arrive in key order: %s" % order
    gaps = [r for r in first_copy.values() if kind(r) == "gap"]
    delivered = [k for k in order if kind(first_copy[k]) != "gap"]
    assert gaps, "no gap record arrived though a week overflowed a %d-byte log" % WEEK_LOG_BYTES
    dropped = sum(g["dropped"] for g in gaps)
    # dropped counts every key lost: the records, and the gap records merged into a later gap
    merged = dropped + len(delivered) - produced
    assert merged == final["stats"]["gaps"] - len(gaps) >= 0, (
        "dropped %d + delivered %d - produced %d != gap records merged (%d written, %d arrived)"
        % (dropped, len(delivered), produced, final["stats"]["gaps"], len(gaps)))

    # the node's own account agrees: the last status record and the log on flash
    statuses = [first_copy[k] for k in delivered if kind(first_copy[k]) == "status"]
    assert statuses and statuses[-1]["counters"]["dropped"] == dropped, statuses[-1]
    for st in statuses:  # every status the node reported shows the log within its bound
        assert st["counters"]["bytes"] <= st["counters"]["max_bytes"] == WEEK_LOG_BYTES, st["counters"]
    assert final["stats"]["dropped"] == dropped and final["stats"]["pending"] == 0, final["stats"]
    assert final["stats"]["bytes"] <= WEEK_LOG_BYTES

    # the gap names exactly what was dropped: every key not delivered lies in a gap's range,
    # no delivered record does, and the ranges start and end at dropped keys
    ranges = [((g["first_epoch"], g["first_seq"]), (g["last_epoch"], g["last_seq"])) for g in gaps]
    epoch = order[0][0]
    assert all(k[0] == epoch for k in order), "deep-sleep wakes resume one epoch: %s" % sorted(set(order))
    gap_keys = {k for k in order if kind(first_copy[k]) == "gap"}
    all_keys = [(epoch, q) for q in range(max(k[1] for k in order) + 1)]
    missing = [k for k in all_keys if k not in first_copy]
    assert missing, "nothing was dropped"
    assert all(_covered(k, ranges) for k in missing), "keys lost without a gap: %s" % [
        k for k in missing if not _covered(k, ranges)]
    inside = [k for k in delivered if _covered(k, ranges)]
    assert not inside, "delivered records inside a gap's range: %s" % inside
    assert min(r[0] for r in ranges) == missing[0] and max(r[1] for r in ranges) in set(missing) | gap_keys
    # the missing keys are exactly the dropped records and the gap records merged into a later gap
    assert len(missing) == dropped, (len(missing), dropped, merged)
    # everything not dropped arrived: the held tail is contiguous up to the last key
    tail = [k for k in all_keys if k > max(r[1] for r in ranges)]
    assert all(k in first_copy for k in tail)
    readings = [first_copy[k] for k in delivered if kind(first_copy[k]) == "reading"]
    assert all(_co2_ok(values_of(r)["co2_ppm"][0]) for r in readings)


def test_the_smallest_valid_log_bound_works_and_a_smaller_one_is_refused(tmp_path):
    """log.max_bytes=16384 (the smallest the schema allows: its default segment, 2048 bytes,
    holds a wake's reading + status record with a gap's room) runs; 4096 is refused at build
    with the field named, rather than crash-looping the node at every wake."""
    # ConfigError is a ValueError (the build loads the node's config module under its own name)
    with pytest.raises(ValueError, match="log.max_bytes"):
        build_node(tmp_path / "small", sets=["log.max_bytes=4096"])
    build = build_node(tmp_path / "fw", sets=["log.max_bytes=16384", "status_every_n_cycles=2"])
    with SimServer() as srv, LinkStub({DEVICE: KEY}) as gw:
        srv.rig.setup([{"model": "scd4x", "truth": ROOM, "seed": 17}], bus={"timeout_ms": 200})
        run = run_node(build, tmp_path / "flash.img", gw, srv, 4, heapsize=ROOMY_HEAP["heapsize"])
        records = gw.unique_records()
    _no_crash(run, "log.max_bytes=16384 with the default segment_bytes")
    assert sum(1 for d, e, r in records if kind(r) == "reading") == 5
    assert sum(1 for d, e, r in records if kind(r) == "status") == 3