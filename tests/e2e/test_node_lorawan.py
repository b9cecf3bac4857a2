"""The real node firmware over LoRaWAN: the legionella-outlet build for both modem boards
(RAK3172 RUI3 and Seeed Wio-E5), booting from littlefs in the MicroPython unix port
(simulators/mpy/board.py) through deep-sleep wakes, reading a simulated TMP117 and talking
AT commands on a pty to the modem emulator, whose uplinks the gateway stub unpacks.

Checked: every reading arrives, unpacked, as the simulated truth within the TMP117's
accuracy, with contiguous seqs per boot epoch; the modem is joined once, not at every wake
(and after failed joins the node backs off a wake); a duty-cycle refusal keeps readings
queued until the band has budget again; confirmed uplinks (RAK build) trim only on the
network's ack, unconfirmed ones (E5 build) when sent; a downlink changing ``interval_s``
takes effect from the next boot (the readings' times show it); malformed and out-of-range
downlinks are counted and change nothing; memory does not grow across wakes. Those tests send
at every wake (``max_delay_s=0``); the profile's own batching (``max_delay_s`` 3600: an uplink
every 13th wake) delivers every reading too, one sending wake per batch period; the ESP32
light-sleeps through each uplink's wait for RX1 while the modem prints nothing; and a status
record cut to fit an uplink still leads a batch (never skipped as unpackable)."""

import json
import time
import types

import cbor2
import pytest

from civicedge import firmware_build as fb
from protocol import quality
from protocol.lorapack_decode import unpack
from simulators.atmodem import ATModemEmulator
from simulators.i2c_server import SimServer
from simulators.lorawan_gateway import LoRaWANGatewayStub
from simulators.mpyrun import REPO, run_micropython

DEVICE = "sch1-kit-hot1"
DEV_EUI = "70b3d57ed005a1c3"
JOIN_EUI = "70b3d57ed0000000"
KEY = bytes.fromhex("5f1c9a0e7b3d2c48a6e1f0b9d8c7a6e5")
APP_KEY = "a0b1c2d3e4f5061728394a5b6c7d8e9f"
PIPE_C = 57.25  # a hot outlet's pipe
TMP117_ACCURACY_C = 0.15  # REFERENCE §2: ±0.15 °C from -40 to 70 °C
INTERVAL_S = 900  # the legionella-outlet profile's
MAX_DELAY_S = 3600  # its link.lorawan.max_delay_s: an uplink every 3600 // 900 + 1 = 5 wakes
BATCH_WAKES = MAX_DELAY_S // INTERVAL_S + 1
SENDING_S = 300  # the ``build`` fixture's interval: a wake every 5 min, each sending
BOARDS = {"rak3172": "esp32-devkitc-rak3272s", "lora-e5": "esp32-devkitc-wio-e5"}


def _build(dialect, out, extra_sets):
    sets = ["link.lorawan.dev_eui=" + DEV_EUI, "link.lorawan.join_eui=" + JOIN_EUI] + list(extra_sets)
    if dialect == "lora-e5":
        sets.append("link.lorawan.confirmed=false")  # both trim rules: RAK confirmed, E5 unconfirmed
    fb.build(BOARDS[dialect], "legionella-outlet", DEVICE, out, sets=sets)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["link"]["modem"]["dialect"] == dialect and cfg["link"]["uart"]["id"] == 2
    assert cfg["power"]["sleep"] == "deep"
    (out / "secrets.json").write_text(json.dumps({"device_key_hex": KEY.hex(), "lorawan_app_key_hex": APP_KEY}))
    return dialect, cfg, out


@pytest.fixture(scope="module", params=sorted(BOARDS))
def build(request, tmp_path_factory):
    """Sending at every wake (``max_delay_s=0``) every 5 minutes, a status record every 6 cycles."""
    dialect = request.param
    out = tmp_path_factory.mktemp("fw-" + dialect) / "flash"
    return _build(dialect, out, ["status_every_n_cycles=6", "link.lorawan.max_delay_s=0",
                                 "interval_s=%d" % SENDING_S])


@pytest.fixture(scope="module", params=sorted(BOARDS))
def batched(request, tmp_path_factory):
    """The profile's batching as built (``max_delay_s`` 3600), a status record every batch."""
    dialect = request.param
    out = tmp_path_factory.mktemp("fw-batched-" + dialect) / "flash"
    built = _build(dialect, out, ["status_every_n_cycles=%d" % BATCH_WAKES])
    assert built[1]["link"]["lorawan"]["max_delay_s"] == MAX_DELAY_S and built[1]["interval_s"] == INTERVAL_S
    return built


def run(build, tmp_path, wakes, setup=None, time_mode="advance", **emu_kw):
    """Boot the build for ``wakes`` wakes against a modem emulator; returns a namespace:
    summary (board.py's), gw, emu, out (stdout), wall_offset_s (wall minus monotonic).
    ``time_mode`` "follow": the node's own sleeps move the clock to the modem's reports."""
    dialect, cfg, out = build
    gw = LoRaWANGatewayStub(port=cfg["link"]["lorawan"]["port"])
    with SimServer() as srv:
        srv.rig.setup([{"model": "tmp117", "truth": {"temperature_c": PIPE_C}, "seed": 5}])
        # 2.1 V through the 1:2 divider (app/hw.py reads the pin at 11 dB attenuation)
        srv.analog["35"] = 1.05
        clock = srv.rig.clock
        with ATModemEmulator(dialect, clock=clock, network=gw, time_mode=time_mode,
                             clock_lock=srv.lock, expected_app_key=APP_KEY, **emu_kw) as emu:
            gw.attach(emu)
            if setup:
                setup(gw, emu)
            args = [str(REPO / "simulators" / "mpy" / "board.py"), "--flash", str(tmp_path / "flash.img"),
                    "--install", str(out), "--wakes", str(wakes), "--rtc-synced"]
            rc, stdout, err = run_micropython(args, server=srv, timeout_s=240, heapsize="320K",
                                              env={"CIVICEDGE_UART2": emu.port_path})
            assert emu.errors == []
        wall_offset_s = clock.wall_s() - clock.monotonic_s()
    lines = [line for line in stdout.splitlines() if line.startswith("BOARD ")]
    assert lines, stdout + err
    summary = json.loads(lines[-1][6:])
    assert summary["end"] == "wakes", stdout + err
    assert "Traceback" not in stdout + err, stdout + err
    assert APP_KEY not in (stdout + err).lower() and APP_KEY.upper() not in stdout + err
    return types.SimpleNamespace(summary=summary, gw=gw, emu=emu, out=stdout, wall_offset_s=wall_offset_s)


def unique(gw):
    """Records by key (a record sent again after a missing ack arrives twice)."""
    out = {}
    for dev, epoch, rec in gw.records:
        key = (epoch, rec["seq"])
        assert out.get(key, rec) == rec  # a resend carries the same record
        out[key] = rec
    return out


def arrivals(gw):
    """Record key -> virtual monotonic time (s) of the first uplink that carried it."""
    out = {}
    for up in gw.uplinks:
        epoch, records = unpack(up.payload)
        for rec in records:
            out.setdefault((epoch, rec["seq"]), up.t_s)
    return out


def readings(recs):
    return {k: r for k, r in recs.items() if r.get("kind", "reading") == "reading"}


def check_every_reading(recs, wakes):
    """Every wake's reading, as the simulated truth, with contiguous seqs per epoch."""
    got = readings(recs)
    assert len(got) == wakes + 1  # one per boot: the first boot and every wake
    for (epoch, seq), rec in got.items():
        [(q, value, flag)] = rec["values"]
        assert q == "temperature_c" and flag == quality.OK
        assert abs(value - PIPE_C) <= TMP117_ACCURACY_C
        assert isinstance(rec["t"], int)  # --rtc-synced: the node's time is trusted
    # contiguous seqs within each boot epoch (readings and status records share them)
    epochs = {}
    for epoch, seq in recs:
        epochs.setdefault(epoch, []).append(seq)
    for seqs in epochs.values():
        assert sorted(seqs) == list(range(len(seqs)))
    return got


def last_status(recs):
    statuses = [recs[k] for k in sorted(recs) if recs[k].get("kind") == "status"]
    assert statuses
    return statuses[-1]


def gaps_s(got):
    ts = [got[k]["t"] for k in sorted(got)]
    return [b - a for a, b in zip(ts, ts[1:])]


def near(values, target, tol=2):
    return all(abs(v - target) <= tol for v in values)


def test_readings_arrive_joined_once_through_a_duty_cycle_refusal(build, tmp_path):
    dialect = build[0]
    blocked = {}

    def setup(gw, emu):
        def network(up):
            gw(up)
            if gw.counters["uplinks"] == 4:
                # Something else used band M's whole hour: the budget frees ~20 min from now.
                emu.duty.record("M", 36000, emu.clock.now_us // 1000 - 2400000)
                blocked["at"] = up.t_s
            if gw.counters["uplinks"] == 8:
                emu.fault("no_ack")  # the next confirmed uplink gets no ack (RAK: confirmed)
        emu.network = network

    wakes = 24
    r = run(build, tmp_path, wakes, setup=setup)
    gw, emu = r.gw, r.emu
    recs = unique(gw)
    got = check_every_reading(recs, wakes)
    assert gw.counters["bad_payloads"] == 0 and gw.counters["other_ports"] == 0
    assert {dev for dev, e, rec in gw.records} == {DEV_EUI.upper()}
    # joined once, on the first boot; every later wake found the modem's session
    assert emu.counters["join_requests"] == 1 and emu.joins == 1
    # refused while the band was over budget; those readings stayed on flash and went up
    # once it had budget again (delay = arrival - reading time), none lost (above)
    assert emu.counters["duty_cycle_refusals"] >= 3
    when = arrivals(gw)
    delays = {k: when[k] + r.wall_offset_s - rec["t"] for k, rec in got.items()}
    held = [k for k in got if delays[k] > SENDING_S]
    assert len(held) >= 3 and all(when[k] > blocked["at"] + 1100 for k in held)
    assert max(delays.values()) < 1500
    status = last_status(recs)
    assert status["counters"]["duty_cycle"] >= 3
    assert status["counters"]["joins"] == 1
    assert [v for v in status["values"] if v[0] == "battery_v"][0][1] == pytest.approx(2.1, abs=0.02)
    # uplinks per wake stay bounded
    assert len(emu.uplinks) <= 4 * (wakes + 1)
    if dialect == "rak3172":  # confirmed uplinks: a trim waits for the network's ack
        assert all(u.confirmed for u in emu.uplinks) and emu.counters["acks"] == len(emu.uplinks) - 1
        assert status["counters"]["not_confirmed"] == 1
        assert len(gw.records) > len(recs)  # the unacked uplink's records went again (same keys)
    else:  # unconfirmed: trimmed when sent; nothing is sent twice
        assert not any(u.confirmed for u in emu.uplinks) and len(gw.records) == len(recs)
    # a steady interval (the first boot sampled after joining), memory flat across wakes
    gaps = gaps_s(got)
    assert SENDING_S - 60 < gaps[0] <= SENDING_S + 1 and near(gaps[1:], SENDING_S)
    free = r.summary["mem_free"]
    assert min(free[-5:]) >= min(free[1:6]) - 2048


def test_a_downlink_changes_the_interval_from_the_next_boot_and_a_bad_one_is_ignored(build, tmp_path):
    def setup(gw, emu):
        gw.queue_downlink(10, b"\xa1\x6ainterval_s\x19\x01", after=3)  # truncated CBOR
        gw.queue_downlink(10, cbor2.dumps({"interval_s": 4}), after=4)  # out of range
        gw.queue_downlink(10, cbor2.dumps({"interval_s": 60}), after=6)

    wakes = 16
    r = run(build, tmp_path, wakes, setup=setup, join_failures=2)
    gw, emu = r.gw, r.emu
    assert gw.counters["downlinks_sent"] == 3 and emu.counters["downlinks"] == 3
    recs = unique(gw)
    got = check_every_reading(recs, wakes)
    # the first boot's two join tries failed; it backed off one wake, then joined once
    assert emu.counters["join_requests"] == 3 and emu.joins == 1
    # the 7th uplink brought the change; that wake still slept the old 300 s, the next boot
    # checked and applied it: from then on a reading every 60 s
    order = sorted(got)
    carried = [(e, rec["seq"]) for e in [unpack(emu.uplinks[6].payload)[0]]
               for rec in unpack(emu.uplinks[6].payload)[1] if rec.get("kind", "reading") == "reading"]
    changed = order.index(max(carried))  # the reading of the wake that received it
    gaps = gaps_s(got)
    # boot 0 sampled after two failed joins (~20 s), wake 2 after its join (~6 s): steady from 3
    assert changed >= 4 and near(gaps[3:changed + 1], SENDING_S)
    assert near(gaps[changed + 1:], 60) and len(gaps[changed + 1:]) >= 5
    status = last_status(recs)["counters"]
    assert status["downlinks_rejected"] == 2 and status["downlinks_applied"] == 1
    assert status["downlinks"] == 3
    assert "overrides:" not in r.out  # the change validated again at every boot


# -- the link itself on CPython: the real driver on the emulator's pty, a real flash log ---------
class _Secrets:
    lorawan_app_key = bytes.fromhex(APP_KEY)


def _link_bench(tmp_path, time_mode="advance", nap=None, **cfg_sets):
    """(link, log, emulator, gateway, port) on one VirtualClock; DR0 (51-byte uplinks),
    unconfirmed, a wake every ``SENDING_S``, sending at every wake unless ``cfg_sets`` say otherwise; ``nap(ms)`` given to the link (it gets
    the link's clock and port as ``nap.clock``, ``nap.port``)."""
    import serial

    from firmware.app import config
    from firmware.app.links.lorawan import LoRaWANLink
    from firmware.app.state import NodeState
    from firmware.app.store import RecordLog
    from simulators.clock import VirtualClock

    raw = fb.node_config(fb.load_board(BOARDS["rak3172"]), fb.load_profile("legionella-outlet"), DEVICE)
    for assignment in ["link.lorawan.dev_eui=" + DEV_EUI, "link.lorawan.data_rate=0", "link.lorawan.adr=false",
                       "link.lorawan.confirmed=false", "link.lorawan.max_delay_s=0", "interval_s=%d" % SENDING_S] + \
            ["%s=%s" % kv for kv in cfg_sets.items()]:
        fb.apply_set(raw, assignment)
    cfg = config.validate(raw)
    clock = VirtualClock()
    gw = LoRaWANGatewayStub()
    emu = ATModemEmulator("rak3172", clock, network=gw, expected_app_key=APP_KEY, time_mode=time_mode).start()
    gw.attach(emu)
    port = serial.Serial(emu.port_path, 115200, timeout=0.005)
    state = NodeState(str(tmp_path))
    state.boot("power_on")
    log = RecordLog(str(tmp_path), 65536, clock=clock, state=state)
    if nap is not None:
        nap.clock, nap.port = clock, port
    link = LoRaWANLink(port, cfg, _Secrets(), clock, root=str(tmp_path), nap=nap)
    return link, log, emu, gw, port


def test_the_link_fits_dr0_skips_an_unpackable_record_and_rejoins_a_lost_session(tmp_path):
    link, log, emu, gw, port = _link_bench(tmp_path)
    try:
        assert link.open() and emu.joins == 1
        t0 = 1767225600
        log.append_all([{"t": t0 + 300 * i, "values": [["temperature_c", 55 + i / 128, "ok"]]} for i in range(30)])
        counters = dict([("counter_%02d" % i, i * 1000) for i in range(20)], boots=3, cycles=31, dropped=0)
        log.append_all([{"t": t0 + 9000, "kind": "status", "values": [["battery_v", 3.05, "ok"],
                                                                       ["boot_reason", "deepsleep", "ok"]],
                         "counters": counters},
                        {"t": t0 + 9000, "values": [["temperature_c", 1e12, "ok"]]},  # beyond the pack's range
                        {"t": t0 + 9300, "values": [["temperature_c", 56.0, "ok"]]}])
        sent = 0
        for _ in range(10):  # wakes: at most 4 uplinks each
            before = len(emu.uplinks)
            sent += link.deliver(log)
            assert len(emu.uplinks) - before <= 4
            if not log.pending(1, mark_sent=False):
                break
        assert sent == 32 and link.counters["records_unpackable"] == 1
        assert all(len(u.payload) <= 51 for u in emu.uplinks) and gw.counters["bad_payloads"] == 0
        got = unique(gw)
        assert sorted(s for e, s in got) == list(range(31)) + [32]  # seq 31 skipped: a gap the receiver sees
        status = got[(1, 30)]
        assert status["values"] == [["battery_v", 3.05, "ok"], ["boot_reason", "deepsleep", "ok"]]
        assert {"boots", "cycles", "dropped"} <= set(status["counters"])  # the most useful kept first
        assert all(counters[k] == v for k, v in status["counters"].items()) and len(status["counters"]) < len(counters)
        # the modem restarts (brown-out): the session is gone; a later deliver joins again
        log.append_all([{"t": t0 + 9600, "values": [["temperature_c", 56.5, "ok"]]}])
        emu.fault("reboot")
        assert link.deliver(log) == 0 and link.counters["link_errors"] == 1
        assert link.deliver(log) == 1 and emu.joins == 2
        assert link.counters["joins"] == 2 and got.keys() <= unique(gw).keys()
    finally:
        port.close()
        emu.stop()
    assert emu.errors == []


# -- batching: the profile's max_delay_s ------------------------------------------------------------
def sending_wakes(emu):
    """The uplinks grouped by the wake that sent them (uplinks less than a minute apart)."""
    groups = []
    for up in emu.uplinks:
        if groups and up.t_s - groups[-1][-1].t_s < 60:
            groups[-1].append(up)
        else:
            groups.append([up])
    return groups


def test_batched_sending_delivers_every_reading_with_one_uplink_wake_per_batch(batched, tmp_path):
    dialect = batched[0]
    wakes = 2 * BATCH_WAKES  # boots 0..10: the first boot sends at once, then every 5th wake
    r = run(batched, tmp_path, wakes)
    gw, emu = r.gw, r.emu
    recs = unique(gw)
    got = check_every_reading(recs, wakes)  # nothing lost, nothing left behind on the flash
    assert gw.counters["bad_payloads"] == 0 and emu.counters["join_requests"] == 1
    groups = sending_wakes(emu)
    assert len(groups) == wakes // BATCH_WAKES + 1  # boot 0, wake 5, wake 10
    # each: one uplink for its readings (5 fit a 222-byte DR5 payload in about 25 bytes), one
    # for the batch's status record, whose counters fill an uplink by themselves
    assert [len(g) for g in groups] == [2, 2, 2]
    assert all(len(unpack(g[0].payload)[1]) == (1 if i == 0 else BATCH_WAKES) for i, g in enumerate(groups))
    starts = [g[0].t_s for g in groups]
    assert near([b - a for a, b in zip(starts, starts[1:])], BATCH_WAKES * INTERVAL_S, tol=60)
    # no reading waited on the node longer than max_delay_s (plus the wake's own seconds)
    when = arrivals(gw)
    delays = [when[k] + r.wall_offset_s - rec["t"] for k, rec in got.items()]
    assert max(delays) <= MAX_DELAY_S + 60 and min(delays) < 60
    assert len([d for d in delays if d > MAX_DELAY_S - INTERVAL_S / 2]) == 2  # the oldest of each batch
    # the sampling interval is unchanged by the batching
    assert near(gaps_s(got)[1:], INTERVAL_S)
    status = last_status(recs)["counters"]
    assert status["uplinks"] == 4  # the status record of wake 10 was logged before its own uplinks
    if dialect == "rak3172":
        assert all(u.confirmed for u in emu.uplinks) and emu.counters["acks"] == len(emu.uplinks)
    free = r.summary["mem_free"]
    assert min(free[-5:]) >= min(free[1:6]) - 2048


def test_the_esp32_light_sleeps_through_the_wait_for_rx1(batched, tmp_path):
    """On the modem's own clock ("follow": the node's sleeps move time to the modem's
    reports), each uplink's wait for its result is spent mostly in light sleep: its time on
    air + RECEIVE_DELAY1, less the margin and the one port read timeout (app/main.py opens
    the UART with timeout=20) that shows the modem has gone quiet after accepting it."""
    from firmware.app.links.lorawan import NAP_MARGIN_MS, RX1_DELAY_MS

    wakes = BATCH_WAKES  # boot 0 and wake 5 send, two uplinks each (readings, status record)
    r = run(batched, tmp_path, wakes, time_mode="follow")
    recs = unique(r.gw)
    check_every_reading(recs, wakes)
    assert len(sending_wakes(r.emu)) == 2 and len(r.emu.uplinks) == 4
    status = last_status(recs)["counters"]  # logged at wake 5, before its own uplinks
    assert status["uplinks"] == 2
    before = r.emu.uplinks[:2]
    most = sum(u.airtime_ms for u in before) + 2 * (RX1_DELAY_MS - NAP_MARGIN_MS)
    uart_timeout_ms = 20
    assert most - 2 * (uart_timeout_ms + 2) <= status["rx_sleep_ms"] <= most


class _Nap:
    """A light sleep on the virtual clock that checks the ESP32 would lose nothing: no byte
    is waiting when it starts, and the modem prints none while it lasts (real time is given
    to the emulator's thread, which prints whatever is due by the new virtual time)."""

    def __init__(self):
        self.naps = []

    def __call__(self, ms):
        assert self.port.in_waiting == 0
        t0 = self.clock.now_us
        self.clock.sleep_ms(ms)
        time.sleep(0.05)
        assert self.port.in_waiting == 0, "the modem spoke during the light sleep"
        self.naps.append((t0, ms))


def test_held_wakes_leave_the_modem_alone_and_the_link_naps_only_while_it_is_silent(tmp_path):
    nap = _Nap()
    # confirmed DR0 uplinks, a batch every 3 wakes (600 // 300 + 1)
    link, log, emu, gw, port = _link_bench(tmp_path, time_mode="follow", nap=nap,
                                           **{"link.lorawan.confirmed": "true", "link.lorawan.max_delay_s": "600"})
    t0 = 1767225600
    try:
        assert link.batch_wakes == 3 and link.wake == {"held": None}
        sent = []
        for wake in range(7):  # a wake: open, log a reading, deliver (as main.py and Node do)
            link.clock.advance_s(300 if wake else 0)
            commands = emu.counters["commands"]
            assert link.open()
            log.append_all([{"t": t0 + 300 * wake, "values": [["temperature_c", 55 + wake / 128, "ok"]]}])
            sent.append(link.deliver(log))
            if wake % 3:  # held: the modem was not asked anything
                assert emu.counters["commands"] == commands and sent[-1] == 0
        assert sent == [1, 0, 0, 3, 0, 0, 3]  # the first wake at once, then every 3rd
        assert link.wake == {"held": 0} and not log.pending(1, mark_sent=False)
        assert sorted(s for e, s in unique(gw)) == list(range(7))
        assert len(emu.uplinks) == 3 and emu.counters["acks"] == 3
        # one nap per uplink, from its command to RECEIVE_DELAY1 - margin after the air time
        from firmware.app.links.lorawan import NAP_MARGIN_MS, RX1_DELAY_MS

        assert len(nap.naps) == 3 and link.counters["rx_sleep_ms"] == sum(ms for _, ms in nap.naps)
        for up, (start_us, ms) in zip(emu.uplinks, nap.naps):
            until_ms = up.t_s * 1000 + up.airtime_ms + RX1_DELAY_MS - NAP_MARGIN_MS
            assert until_ms - 25 <= (start_us / 1000 + ms) <= until_ms + 1
            # it spans the wait from the command on, less what the command's exchange took in
            # real time (the clock follows it here: ~20 ms, more on a loaded machine)
            assert ms >= up.airtime_ms + RX1_DELAY_MS - NAP_MARGIN_MS - 150
        # a refused uplink keeps the batch due: the next wake tries again, no batch period lost
        log.append_all([{"t": t0 + 2100, "values": [["temperature_c", 56.0, "ok"]]}])
        emu.fault("busy")
        link.wake["held"] = 2  # the batch is due at this wake
        assert link.deliver(log) == 0 and link.wake == {"held": 2} and link.due()
        assert link.counters["busy"] == 1
        assert link.deliver(log) == 1 and link.wake == {"held": 0}
    finally:
        port.close()
        emu.stop()
    assert emu.errors == []


def test_a_status_record_cut_to_fit_still_leads_a_batch(tmp_path):
    """A status record is cut to fit an uplink alone; first in a batch it must fit as well,
    so the link gives the pack its time step (the node's interval) rather than letting it
    take the look-ahead's, which may need a longer header: the record is sent, never skipped
    as unpackable (seen as a lost seq when its counters came within a byte of the payload)."""
    import random

    from firmware.app.links import lorawan
    from firmware.app.state import NodeState
    from firmware.app.store import RecordLog
    from protocol.lorapack import pack

    rng = random.Random(3)
    names = ["counter_%02d" % i for i in range(40)]
    t0 = 1767225600
    for i in range(60):
        root = tmp_path / ("n%d" % i)
        root.mkdir()
        state = NodeState(str(root))
        state.boot("power_on")
        log = RecordLog(str(root), 65536, state=state)
        counters = dict((n, rng.choice((0, 7, 300, 70000, 2 ** 24))) for n in rng.sample(names, 32))
        log.append_all([{"t": t0, "kind": "status", "values": [["battery_v", 3.05, "ok"]], "counters": counters},
                         {"t": t0 + 300 * rng.randint(1, 5000), "values": [["temperature_c", 55.0, "ok"]]}])
        for room in (51, 115, 222):
            seqs = []
            payload, n = pack(lorawan._stream(log, 1, room, seqs, 300), room, 1, 300)  # never raises
            assert n >= 1 and len(payload) <= room and seqs[0] == 0
