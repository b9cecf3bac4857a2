"""The LoRaWAN upstream forwarder against the AT-modem emulator on a pty (both dialects), a
real SQLite outbox and one VirtualClock: every row goes out (decoded from what the emulator
transmitted), alarms first and confirmed, the duty cycle and TTN fair use never exceeded in
the emulator's own log, faults (garbled, cut and silent replies, a modem restart, an unplugged
port, failed joins, missing acks) survived, downlinks applied. The steps are driven with
``run_once`` and the virtual clock is advanced by the waits it returns; one test runs the
thread. No wall-time assertions."""

import os
import random
import threading

import pytest

from gateway.config_types import LoRaWANUpstream
from gateway.forward import Forwarder
from gateway.forward import lorawan_decode as dl
from gateway.forward import lorawan_envelope as env
from gateway.forward.lorawan import LoRaWANForwarder
from gateway.forward.lorawan_decode import decode_uplink
from gateway.outbox import Outbox, OutboxRecord
from protocol import lorapack
from simulators.atmodem import ATModemEmulator
from simulators.clock import VirtualClock

APP_KEY = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
DEV_EUI, JOIN_EUI = "70B3D57ED0061234", "70B3D57ED0000001"
T0 = 1767571200
RULE = "hot_outlet_below_50"
HOUR_MS, DAY_MS = 3600000, 86400000


class Site:
    """An emulated modem behind a stable port name (a symlink, like /dev/serial/by-id/...),
    an outbox in ``tmp``, and the forwarder, all on one VirtualClock."""

    def __init__(self, tmp, dialect="rak3172", ttn=False, confirmed_alarms=True, dr=0, fwd_kw=None,
                 **emu_kw):
        self.tmp, self.dialect, self.dr, self.emu_kw = tmp, dialect, dr, emu_kw
        self.clock = VirtualClock()
        self.uplinks = []  # every uplink any emulator transmitted
        self.link = str(tmp / "ttyLoRa")
        self.emus = []
        self.plug()
        up = LoRaWANUpstream(self.link, self.emu.baudrate, dialect, DEV_EUI, JOIN_EUI, "unused", ttn,
                             confirmed_alarms)
        self.outbox = Outbox(tmp / "outbox.db", 64 << 20, 30 * 86400, self.clock)
        # A real modem answers within ~100 ms; 500 ms keeps silent-modem tests short.
        self.fwd = LoRaWANForwarder(up, APP_KEY, self.clock, rng=random.Random(7), command_timeout_ms=500,
                                    **(fwd_kw or {}))
        self.fwd.attach(self.outbox)
        self.put_rows = {}

    def plug(self):
        self.emu = ATModemEmulator(self.dialect, self.clock, network=self.uplinks.append,
                                   expected_app_key=APP_KEY.hex(), **self.emu_kw).start()
        self.emu.dr = self.dr  # the data rate ADR left the modem at
        self.emus.append(self.emu)
        if os.path.lexists(self.link):
            os.unlink(self.link)
        os.symlink(self.emu.port_path, self.link)

    def unplug(self):
        self.emu.stop()

    def close(self):
        self.fwd.stop()
        self.outbox.close()
        for e in self.emus:
            e.stop()
            assert e.errors == []

    def put(self, records):
        self.outbox.put_many(records)
        for r in records:
            self.put_rows[(r.device_id, r.boot_epoch, r.seq)] = r
        self.fwd.wake()

    def step(self):
        """One forwarder step; advance the clock by the wait it asks. Returns the wait."""
        wait = self.fwd.run_once()
        if wait:
            self.clock.advance_us(wait * 1000)
        return wait

    def drain(self, max_steps=400):
        for _ in range(max_steps):
            if self.step() is None:
                return
        raise AssertionError("not drained in %d steps: %r" % (max_steps, self.fwd.counters()))

    def received(self, devices=()):
        """Every record the network got: [(device, epoch, record, uplink)] in arrival order."""
        out = []
        for u in self.uplinks:
            assert u.port == env.UPLINK_PORT
            dec = decode_uplink(u.payload, devices=devices or {k[0] for k in self.put_rows}, rules=[RULE])
            out += [(d, e, r, u) for d, e, r in dec["records"]]
        return out


@pytest.fixture
def site(tmp_path):
    made = []

    def make(**kw):
        d = tmp_path / ("site%d" % len(made))
        d.mkdir()
        made.append(Site(d, **kw))
        return made[-1]
    yield make
    for s in made:
        s.close()


def readings(dev, n, epoch=1, start_seq=0, interval_s=300, alarm_at=(), q="temperature_c", base=57.0):
    out = []
    for seq in range(start_seq, start_seq + n):
        rec = {"seq": seq, "t": T0 + interval_s * seq, "values": [[q, base - seq / 64, "ok"]]}
        lane = "routine"
        if seq in alarm_at:
            rec["alarms"] = [{"kind": "raised", "rule": RULE, "device_id": dev, "quantity": q, "value": 49.0,
                              "since": rec["t"], "at": rec["t"], "severity": "critical", "detail": {}}]
            lane = "alarm"
        out.append(OutboxRecord(dev, epoch, seq, rec, lane))
    return out


def assert_all_delivered(s):
    got = {}
    for d, e, r, _ in s.received():
        got.setdefault((d, e, r["seq"]), r)
    assert set(got) == set(s.put_rows)
    for key, rec in got.items():
        sent = s.put_rows[key].record
        assert [[q, lorapack.scaled(q, v), f] for q, v, f in rec["values"]] == \
            [[q, lorapack.scaled(q, v), f] for q, v, f in sent["values"]]
    assert s.outbox.stats().rows == {"alarm": 0, "routine": 0}
    return got


def max_airtime_in_window(uplinks, window_ms):
    """The most airtime (ms) any sliding window of ``window_ms`` holds, counting a frame in
    full if any part of it is inside (the emulator's log: start t_s, airtime_ms)."""
    frames = sorted((u.t_s * 1000, u.t_s * 1000 + u.airtime_ms, u.airtime_ms) for u in uplinks)
    worst = 0
    for _, end, _ in frames:
        worst = max(worst, sum(a for s, e, a in frames if e > end - window_ms and s <= end))
    return worst


@pytest.mark.parametrize("dialect", ["rak3172", "lora-e5"])
def test_everything_goes_out_alarms_first_and_confirmed(site, dialect):
    s = site(dialect=dialect, dr=3)
    assert isinstance(s.fwd, Forwarder)
    s.put(readings("sch1-kit-hot1", 40) + readings("sch1-kit-hot2", 40, epoch=7, alarm_at=(31,))
          + readings("ward3-bin-0042", 30, q="distance_cm", base=120, interval_s=1800))
    s.drain()
    got = assert_all_delivered(s)
    first = s.uplinks[0]
    assert first.confirmed and [u.confirmed for u in s.uplinks[1:]] == [False] * (len(s.uplinks) - 1)
    dec = decode_uplink(first.payload, devices=["sch1-kit-hot2"], rules=[RULE])
    assert dec["records"][0][:2] == ("sch1-kit-hot2", 7) and dec["records"][0][2]["seq"] == 31
    assert got[("sch1-kit-hot2", 7, 31)]["alarms"][0]["rule"] == RULE
    c = s.fwd.counters()
    assert c["forwarded"] == 110 and c["alarms_forwarded"] == 1 and c["joins"] == 1
    assert c["confirmed"] == c["acked"] == 1 and c["uplinks"] == len(s.uplinks)
    assert max(len(u.payload) for u in s.uplinks) <= 115  # DR3's limit
    assert c["airtime_ms"] >= sum(u.airtime_ms for u in s.uplinks)
    st = s.fwd.status()
    assert st["connected"] and st["dr"] == 3 and "nothing to send" in st["detail"]


def test_duty_cycle_is_never_exceeded_and_rows_wait_in_the_outbox(site):
    s = site(dr=0)  # SF12: a full uplink is 2.8 s on air, 12 an hour
    s.put(readings("a", 200, q="co2_ppm", base=1000) + readings("b", 200, q="co2_ppm", base=700))
    kept_while_waiting = []
    while s.step() is not None:
        if s.fwd.counters()["budget_waits"] == 1 and not kept_while_waiting:
            kept_while_waiting.append(s.outbox.stats().rows["routine"])
    assert kept_while_waiting[0] > 0 and s.outbox.stats().in_flight == 0  # waiting, rows kept
    assert_all_delivered(s)
    c = s.fwd.counters()
    assert len(s.uplinks) > 12 and c["budget_waits"] >= 1
    assert c["budget_waits.duty_cycle"] == c["budget_waits"]
    assert max_airtime_in_window(s.uplinks, HOUR_MS) <= 36000
    assert s.emu.counters["duty_cycle_refusals"] == 0  # the modem was never driven past it


def test_ttn_fair_use_is_respected(site):
    s = site(dr=0, ttn=True)
    s.put(readings("a", 400, q="co2_ppm", base=1000, interval_s=120))
    for _ in range(60):  # two virtual days and more
        s.step()
        if s.clock.now_us > 2 * DAY_MS * 1000:
            break
    c = s.fwd.counters()
    assert c["budget_waits.fair_use"] >= 1
    assert max_airtime_in_window(s.uplinks, DAY_MS) <= 30000
    assert max_airtime_in_window(s.uplinks, HOUR_MS) <= 36000
    assert 10 <= len(s.uplinks) <= 31  # 10 full SF12 uplinks a day (+ the join's airtime)
    assert s.fwd.status()["fair_used_ms"] <= 30000


@pytest.mark.parametrize("dialect, fault", [
    ("rak3172", "garble"), ("lora-e5", "garble"), ("rak3172", "partial"), ("lora-e5", "silent"),
    ("rak3172", "reboot"), ("lora-e5", "reboot")])
def test_modem_faults_are_counted_and_survived(site, dialect, fault):
    s = site(dialect=dialect, dr=5)
    s.put(readings("a", 30))
    s.step()  # the port opens and the modem joins
    s.step()  # an uplink
    s.emu.fault(fault, count=2)
    s.put(readings("b", 60))
    s.drain()
    assert_all_delivered(s)
    c = s.fwd.counters()
    assert c["modem_errors"] >= 1 and c["reconnects"] >= 1
    if fault == "reboot":
        assert c["joins"] >= 2 or c["not_joined"] >= 1
    assert max_airtime_in_window(s.uplinks, HOUR_MS) <= 36000


def test_an_unplugged_modem_is_reopened_under_the_same_name(site):
    s = site(dr=5)
    s.put(readings("a", 20))
    s.drain()
    s.unplug()
    s.put(readings("b", 20))
    for _ in range(5):
        s.step()  # errors, then the port cannot be opened: backing off
    c = s.fwd.counters()
    assert c["modem_errors"] + c["port_errors"] >= 1
    assert not s.fwd.status()["connected"] and s.outbox.stats().rows["routine"] == 20
    s.plug()  # the same symlink now leads to a (new, unjoined) modem
    s.drain()
    assert_all_delivered(s)
    assert s.fwd.counters()["joins"] == 2 and s.fwd.status()["connected"]


def test_join_failures_back_off_with_jitter_and_a_kept_session_is_reused(site, tmp_path):
    s = site(dr=5, join_failures=2)
    s.put(readings("a", 5))
    waits = [s.step() for _ in range(3)]
    c = s.fwd.counters()
    assert c["join_failures"] == 2 and c["joins"] == 1
    assert 7500 <= waits[0] <= 15000 and 15000 <= waits[1] <= 30000  # 15 s, 30 s, equal jitter
    assert "join failed" in s.fwd.status()["detail"] or c["joins"] == 1
    s.drain()
    # A second forwarder (the gateway restarted) finds the modem joined: no join request.
    up = s.fwd.up
    fwd2 = LoRaWANForwarder(up, APP_KEY, s.clock, rng=random.Random(3))
    s.fwd.stop()
    fwd2.attach(s.outbox)
    s.put(readings("a", 5, start_seq=5))
    requests = s.emu.counters["join_requests"]
    for _ in range(10):
        w = fwd2.run_once()
        if w is None:
            break
        s.clock.advance_us(w * 1000)
    fwd2.stop()
    assert s.emu.counters["join_requests"] == requests and fwd2.counters()["joins"] == 0
    assert_all_delivered(s)


def test_a_confirmed_alarm_without_ack_stays_and_is_sent_again(site):
    s = site(dr=5)
    s.put(readings("a", 3))
    s.drain()
    s.emu.fault("no_ack", count=2)
    s.put(readings("hot", 1, start_seq=9, alarm_at=(9,)))
    for _ in range(10):
        s.step()
        if s.fwd.counters()["no_ack"] == 2:
            break
    assert s.fwd.counters()["no_ack"] == 2 and s.outbox.stats().rows["alarm"] == 1  # kept
    s.drain()
    c = s.fwd.counters()
    assert c["acked"] == 1 and c["confirmed"] == 3 and s.outbox.stats().rows["alarm"] == 0
    alarm_sends = [u for d, e, r, u in s.received() if d == "hot"]
    assert len(alarm_sends) == 3 and all(u.confirmed for u in alarm_sends)  # at least once
    t = [u.t_s for u in alarm_sends]
    assert t[1] - t[0] >= 15 and t[2] - t[1] >= 30  # retries back off: 30 s, 60 s, jittered


def test_without_confirmed_alarms_alarms_still_go_first(site):
    s = site(dr=5, confirmed_alarms=False)
    s.put(readings("a", 10) + readings("hot", 1, start_seq=4, alarm_at=(4,)))
    s.drain()
    assert not any(u.confirmed for u in s.uplinks)
    assert s.received()[0][0] == "hot"
    assert_all_delivered(s)


def test_downlinks_change_the_configuration(site):
    s = site(dr=5)
    s.put(readings("a", 4))
    s.emu.queue_downlink(env.DOWNLINK_PORT, dl.encode_commands([(dl.CMD_CAP, 2)]))
    s.drain()
    s.put(readings("a", 6, start_seq=4))
    n = len(s.uplinks)
    s.drain()
    assert [len(decode_uplink(u.payload)["records"]) for u in s.uplinks[n:]] == [2, 2, 2]
    # pause routine forwarding: alarms still go; then a status request and resume
    s.emu.queue_downlink(env.DOWNLINK_PORT, dl.encode_commands([(dl.CMD_PAUSE, 0), (dl.CMD_CAP, 0)]))
    s.put(readings("a", 1, start_seq=10))
    s.drain()
    assert s.fwd.status()["paused"] and s.fwd.status()["cap"] is None
    s.put(readings("a", 5, start_seq=11) + readings("hot", 1, start_seq=3, alarm_at=(3,)))
    s.drain()
    assert s.outbox.stats().rows == {"alarm": 0, "routine": 5}
    s.emu.queue_downlink(env.DOWNLINK_PORT, dl.encode_commands([(dl.CMD_RESUME, None), (dl.CMD_STATUS, None),
                                                                 (dl.CMD_DIRECTORY, None)]))
    s.put(readings("hot", 1, start_seq=4, alarm_at=(4,)))  # an uplink to carry the downlink back
    s.drain()
    assert not s.fwd.status()["paused"]
    assert_all_delivered(s)
    status = [decode_uplink(u.payload)["status"] for u in s.uplinks if decode_uplink(u.payload)["status"]]
    assert len(status) == 1 and status[0]["rows_routine"] == 5 and status[0]["paused"] == 0
    dirs = [decode_uplink(u.payload)["directory"] for u in s.uplinks]
    assert {"a", "hot"} <= set().union(*dirs)
    c = s.fwd.counters()
    assert c["downlinks"] == c["downlinks_applied"] == 3 and c["bad_downlinks"] == 0
    assert c["status_uplinks"] == 1


def test_malformed_downlinks_are_counted_and_change_nothing(site):
    s = site(dr=5)
    bad = ((env.DOWNLINK_PORT, b"\x09\x01"), (10, b"\x01\x02"), (env.DOWNLINK_PORT, b"\x02\x00"))
    for port, payload in bad:
        s.emu.queue_downlink(port, payload)
        s.put(readings("a", 1, start_seq=len(s.put_rows)))
        s.drain()
    c = s.fwd.counters()
    assert c["downlinks"] == 3 and c["bad_downlinks"] == 3 and c["downlinks_applied"] == 0
    assert s.fwd.status()["cap"] is None and not s.fwd.status()["paused"]
    assert_all_delivered(s)


class MisreportsTheDataRate:
    """A serial port (byte level) whose modem answers the next ``times`` ``AT+DR=?`` with 5
    while it transmits at its real DR: as if ADR lowered the DR right after the host read it."""

    def __init__(self, port, times=1):
        self.port, self.times, self.armed = port, times, False

    def write(self, data):
        if bytes(data).startswith(b"AT+DR=?") and self.times:
            self.times -= 1
            self.armed = True
        return self.port.write(data)

    def read(self, n):
        got = self.port.read(n)
        if self.armed and got[:1].isdigit():
            self.armed = False
            got = b"5" + got[1:]
        return got


def test_an_uplink_refused_for_its_length_is_resent_smaller(site):
    import serial

    s = site(dr=0)
    port = serial.Serial(s.emu.port_path, s.emu.baudrate, timeout=0.01)
    try:
        fake = MisreportsTheDataRate(port, times=0)
        fwd = LoRaWANForwarder(s.fwd.up, APP_KEY, s.clock, serial_port=fake, rng=random.Random(1),
                               command_timeout_ms=500, max_delay_s=0)
        fwd.attach(s.outbox)  # the site's own forwarder never runs here
        s.put(readings("a", 80, q="co2_ppm", base=900))
        fwd.run_once()  # join (reads the real DR)
        fake.times = 1
        fwd.run_once()  # packs 222 bytes for "DR5"; the modem at DR0 refuses the length
        c = fwd.counters()
        assert c["uplink_refused"] == 1 and c["publish_errors"] == 1 and c["uplinks"] == 0
        assert s.outbox.stats().in_flight == 0 and s.outbox.stats().rows["routine"] == 80
        for _ in range(100):
            w = fwd.run_once()
            if w is None:
                break
            s.clock.advance_us((w or 0) * 1000)
        assert max(len(u.payload) for u in s.uplinks) <= 51 - 15  # room left for FOpts
        assert fwd.counters()["modem_errors"] == 0
        assert_all_delivered(s)
    finally:
        port.close()


def test_a_routine_uplink_waits_to_fill_but_not_longer_than_max_delay(site):
    s = site(dr=5)
    s.put(readings("a", 1))
    s.step()  # join
    t0 = s.clock.monotonic_s()
    assert s.fwd.run_once() == 900000 and s.uplinks == [] and "holding" in s.fwd.status()["detail"]
    s.clock.advance_s(600)
    s.put(readings("a", 5, start_seq=1))
    assert s.fwd.run_once() == 300000 and s.uplinks == []  # still not full: the rest of 15 min
    s.drain()
    (u,) = s.uplinks
    assert u.t_s - t0 >= 900 and len(decode_uplink(u.payload)["records"]) == 6
    # a backlog that fills uplinks goes at once, and an alarm never waits
    s.put(readings("b", 200, q="co2_ppm", base=800, interval_s=120))
    s.step()
    assert len(s.uplinks) == 2 and len(s.uplinks[1].payload) > 0.75 * 222
    s.put(readings("hot", 1, start_seq=3, alarm_at=(3,)))
    s.step()
    assert s.uplinks[2].confirmed


def test_the_thread_drains_wakes_and_stops(site):
    s = site(dr=5, fwd_kw={"max_delay_s": 0})
    s.put(readings("a", 30))
    s.fwd.start(s.outbox)
    try:
        _until(lambda: s.outbox.stats().rows["routine"] == 0)
        _until(lambda: s.fwd.status()["detail"].endswith("nothing to send"))
        s.put(readings("b", 30))  # put() calls wake(): the idle wait (60 s) ends at once
        _until(lambda: s.outbox.stats().rows["routine"] == 0)
    finally:
        assert s.fwd.stop(timeout_s=5.0)
    assert_all_delivered(s)
    assert s.fwd.counters()["in_flight"] == 0 and s.outbox.stats().in_flight == 0


def _until(cond, limit_s=20.0):
    done = threading.Event()
    for _ in range(int(limit_s / 0.02)):
        if cond():
            return
        done.wait(0.02)
    raise AssertionError("condition not reached")
