"""The Pi's own sensors as a source: the real drivers read simulated parts on a SimI2CBus,
the readings travel as real authenticated frames through the real pipeline (tag, replay,
dedupe) and its acks trim them; a failing part is flagged sensor_failed and the rest keep
reporting; the boot epoch and the unacked readings survive a restart in the state file."""

import json

import pytest

from gateway.config_types import I2CSource, LocalSensor
from gateway.pipeline import Ingest
from gateway.sources import FRAME
from gateway.sources.local_i2c import LocalI2CSource
from protocol import quality
from simulators.clock import VirtualClock
from simulators.rig import LocalRig
from tests.gatewaykit import wait_until

DEV = "sch1-gw1-local"
KEY = bytes(range(50, 82))
ROOM = {"co2_ppm": 900.0, "temperature_c": 21.0, "rh_percent": 45.0}
PIPE = {"temperature_c": 55.0}
SENSORS = (LocalSensor("room", "scd4x", 0x62), LocalSensor("pipe", "tmp117", 0x48))


def rig(extra=(), trusted=True):
    r = LocalRig(VirtualClock(wall_trusted=trusted))
    r.setup([{"model": "scd4x", "truth": ROOM, "seed": 1},
             {"model": "tmp117", "address": 0x48, "truth": PIPE, "seed": 2}] + list(extra))
    r.advance_s(1.5)  # the Pi booted well after the parts powered up (SCD4x: 1 s)
    return r


def cfg(sensors=SENSORS, interval_s=120, bus=1):
    return I2CSource(DEV, bus, interval_s, tuple(sensors))


class Agent:
    """The agent's side, reduced to what a source sees: the real pipeline, acks sent back."""

    def __init__(self, accept=True):
        self.ingest = Ingest({DEV: KEY})
        self.accept = accept
        self.arrivals, self.results = [], []

    def __call__(self, arrival):
        if not self.accept:
            return False
        self.arrivals.append(arrival)
        res = self.ingest.ingest_frame(arrival.data, arrival.source, device_id=arrival.device_id,
                                       received_s=arrival.received_s)
        self.results.append(res)
        if res.ack:
            self.ingest.commit()
            arrival.reply(res.ack)
        return True

    def records(self):
        return [(r.boot_epoch, r.seq, r.record) for res in self.results for r in res.records
                if not r.duplicate]


def by_hand(src, agent):
    """Drive cycles by hand on the virtual clock: the sink without the source's thread."""
    src._sink = agent
    return src


def values_of(record):
    return {q: (v, f) for q, v, f in record["values"]}


def test_readings_run_the_node_path_through_the_real_pipeline():
    r = rig()
    agent = Agent()
    src = LocalI2CSource(cfg(interval_s=5), KEY, r.clock, r.bus)
    src.start(agent)  # its thread: the SCD4x's 5 s samples move the virtual clock
    try:
        assert wait_until(lambda: len(agent.arrivals) >= 3)
    finally:
        src.stop()
    assert src._thread is None and src.status()["detail"] == "stopped"
    a = agent.arrivals[0]
    assert (a.kind, a.source, a.device_id) == (FRAME, "i2c:1", DEV)
    assert all(res.accepted for res in agent.results)
    recs = agent.records()
    assert [(e, s) for e, s, _ in recs] == [(1, i) for i in range(len(recs))]
    assert recs[1][2]["kind"] == "status" and recs[1][2]["counters"]["cycles"] == 1
    readings = [rec for _, _, rec in recs if rec.get("kind", "reading") == "reading"]
    for rec in readings:
        v = values_of(rec)
        assert v["co2_ppm"][1] == quality.OK and abs(v["co2_ppm"][0] - 900) <= 50 + 0.025 * 900
        assert v["rh_percent"][1] == quality.OK and abs(v["rh_percent"][0] - 45.0) <= 6
        # one temperature per record: the TMP117's (±0.1 °C), not the SCD4x's
        assert abs(v["temperature_c"][0] - 55.0) <= 0.1
        assert rec["t"] is not None
    c = src.counters()
    assert c["records_acked"] == len(recs) and c["pending"] == 0 and c["sensor_failures"] == 0


def test_a_failing_sensor_is_flagged_and_the_others_keep_reporting():
    r = rig()
    r.fault(0x48, {"kind": "nack"})
    agent = Agent()
    src = by_hand(LocalI2CSource(cfg(), KEY, r.clock, r.bus, status_every_n=0), agent)
    values = src.sample_once()
    assert ["temperature_c", None, quality.SENSOR_FAILED] in values
    assert values_of({"values": values})["co2_ppm"][1] == quality.OK
    c = src.counters()
    assert c["sensor_failures"] == 1 and c["nacks"] >= 4
    assert src.status()["connected"] is False and "pipe" in src.status()["detail"]
    assert agent.results[0].accepted  # a failed value is data too: it travels, flagged
    r.clear_faults(0x48)
    r.advance_s(120)
    values = src.sample_once()
    assert all(f == quality.OK for _, _, f in values)
    assert src.status()["connected"] is True


def test_untrusted_wall_time_gives_no_time_and_unsynced_flags():
    r = rig(trusted=False)
    agent = Agent()
    src = by_hand(LocalI2CSource(cfg(), KEY, r.clock, r.bus, status_every_n=0), agent)
    src.sample_once()
    (_, _, rec), = agent.records()
    assert rec["t"] is None
    assert all(f == quality.TIME_UNSYNCED for _, _, f in rec["values"])
    assert agent.arrivals[0].received_s is None


def test_what_the_agent_could_not_take_is_sent_again_with_the_next():
    r = rig()
    agent = Agent(accept=False)
    src = by_hand(LocalI2CSource(cfg(), KEY, r.clock, r.bus, status_every_n=0), agent)
    src.sample_once()
    assert src.counters()["overflow"] == 1 and src.counters()["pending"] == 1
    agent.accept = True
    r.advance_s(120)
    src.sample_once()
    assert [(e, s) for e, s, _ in agent.records()] == [(1, 0), (1, 1)]
    assert src.counters()["pending"] == 0


def test_acks_are_verified_before_anything_is_trimmed():
    from protocol import frame

    r = rig()
    agent = Agent(accept=False)
    src = by_hand(LocalI2CSource(cfg(), KEY, r.clock, r.bus, status_every_n=0), agent)
    src.sample_once()
    src._on_ack(frame.encode_ack(bytes(range(32)), DEV, 1, 0))   # another key: forged
    src._on_ack(frame.encode_ack(KEY, DEV, 1, 5))                 # beyond what was sent
    src._on_ack(frame.encode_ack(KEY, DEV, 2, 0))                 # an epoch never sent
    src._on_ack(b"\x01\x02")
    assert src.counters()["bad_acks"] == 4 and src.counters()["pending"] == 1
    src._on_ack(frame.encode_ack(KEY, DEV, 1, 0))
    assert src.counters()["pending"] == 0 and src.counters()["records_acked"] == 1


def test_restart_keeps_the_epoch_and_the_unacked_readings(tmp_path):
    path = str(tmp_path / "local-i2c.json")
    r = rig()
    agent = Agent(accept=False)
    src = by_hand(LocalI2CSource(cfg(), KEY, r.clock, r.bus, state_path=path, status_every_n=0), agent)
    assert src.boot_epoch == 1
    src.sample_once()
    saved = json.load(open(path))
    assert saved["boot_epoch"] == 1 and [p[1]["seq"] for p in saved["pending"]] == [0]
    # the agent restarts: a new source on the same file
    agent.accept = True
    src2 = by_hand(LocalI2CSource(cfg(), KEY, r.clock, r.bus, state_path=path, status_every_n=0), agent)
    assert src2.boot_epoch == 2
    r.advance_s(120)
    src2.sample_once()                 # sends the older epoch first...
    assert src2._wake.is_set()         # ...its ack wakes the thread to send the rest
    src2.send_pending()
    assert [(e, s) for e, s, _ in agent.records()] == [(1, 0), (2, 0)]
    assert all(res.accepted for res in agent.results)
    src2._save()
    assert json.load(open(path))["pending"] == []
    assert LocalI2CSource(cfg(), KEY, r.clock, r.bus, state_path=path).boot_epoch == 3


def test_a_corrupt_state_file_stops_the_source_with_a_clear_error(tmp_path):
    path = tmp_path / "local-i2c.json"
    path.write_text('{"boot_epoch": "three"')
    r = rig()
    with pytest.raises(ValueError, match="local-i2c.json.*boot epoch.*backup"):
        LocalI2CSource(cfg(), KEY, r.clock, r.bus, state_path=str(path))


def test_pending_is_bounded_and_a_gap_record_counts_the_drop():
    r = rig()
    agent = Agent(accept=False)
    src = by_hand(LocalI2CSource(cfg(), KEY, r.clock, r.bus, status_every_n=0, max_pending=4,
                                 max_batch_records=16), agent)
    for _ in range(6):
        src.sample_once()
        r.advance_s(120)
    c = src.counters()
    assert c["dropped"] >= 3 and c["pending"] <= 4
    agent.accept = True
    src.sample_once()
    c = src.counters()
    recs = agent.records()
    gaps = [rec for _, _, rec in recs if rec.get("kind") == "gap"]
    kept = [s for _, s, rec in recs if rec.get("kind", "reading") == "reading"]
    assert gaps and sum(g["dropped"] for g in gaps) == c["dropped"]
    seqs = {s for _, s, _ in recs}
    missing = set(range(max(seqs) + 1)) - seqs     # every key that never arrived is counted
    assert len(missing) == c["dropped"]
    merged = len(missing) - (7 - len(kept))        # a merged gap record's own key is among them
    assert merged >= 1
    covered = set()
    for g in gaps:
        assert g["first_epoch"] == g["last_epoch"] == 1
        covered |= set(range(g["first_seq"], g["last_seq"] + 1))
    assert covered.isdisjoint(kept) and min(covered) == 0   # the oldest went first
    assert all(res.accepted for res in agent.results)


def test_no2_through_the_ads1115_needs_its_calibration_sheet():
    electrode = {"model": "ads1115", "address": 0x49, "seed": 4,
                 "inputs": {"electrode": {"zero_algorithm": 1}, "we": 0, "ae": 1},
                 "truth": {"no2_ppb": 40.0, "temperature_c": 21.0}}
    r = rig([electrode])
    sensors = SENSORS + (LocalSensor("no2", "ads1115", 0x49),)
    with pytest.raises(ValueError, match="'no2'.*calibration"):
        LocalI2CSource(cfg(sensors), KEY, r.clock, r.bus)
    sheet = r.bus.devices[0x49].electrode_sheet
    agent = Agent()
    src = by_hand(LocalI2CSource(cfg(sensors), KEY, r.clock, r.bus, status_every_n=0,
                                 sensor_options={"no2": {"calibration": sheet,
                                                         "temperature_sensor": "pipe"}}), agent)
    r.set_truth(0x48, {"temperature_c": 21.0})
    v = values_of({"values": src.sample_once()})
    assert v["no2_ppb"][1] == quality.OK and abs(v["no2_ppb"][0] - 40.0) < 15
    assert v["no2_ugm3"][1] == quality.OK and agent.results[0].accepted


def test_a_bus_that_cannot_open_fails_every_sensor_and_says_what_to_do():
    agent = Agent()
    src = by_hand(LocalI2CSource(cfg(bus=31), KEY, VirtualClock(), None, status_every_n=0), agent)
    values = src.sample_once()
    assert values and all(v is None and f == quality.SENSOR_FAILED for _, v, f in values)
    st = src.status()
    assert st["connected"] is False and "raspi-config" in st["detail"]
    assert src.counters()["bus_errors"] == 1 and agent.results[0].accepted


def test_the_sonar_reports_fill_only_with_the_bins_depths():
    r = LocalRig(VirtualClock())
    r.setup([{"model": "i2cxl", "address": 0x70, "truth": {"distance_cm": 60.0, "temperature_c": 20.0},
              "seed": 3}])
    sonar = (LocalSensor("bin", "i2cxl", 0x70),)
    v = values_of({"values": by_hand(LocalI2CSource(cfg(sonar), KEY, r.clock, r.bus), Agent()).sample_once()})
    assert set(v) == {"distance_cm"} and abs(v["distance_cm"][0] - 60.0) <= 1.6
    src = by_hand(LocalI2CSource(cfg(sonar), KEY, r.clock, r.bus,
                                 sensor_options={"bin": {"empty_cm": 100.0, "full_cm": 20.0}}), Agent())
    v = values_of({"values": src.sample_once()})
    assert abs(v["fill_ratio"][0] - 0.5) <= 0.03


def test_each_quantity_has_one_reporting_sensor():
    r = rig()
    src = LocalI2CSource(cfg((LocalSensor("pipe", "tmp117", 0x48), LocalSensor("room", "scd4x", 0x62))),
                         KEY, r.clock, r.bus)
    by_name = {x.name: x.reports for x in src._sampler.readers}
    assert by_name == {"pipe": ["temperature_c"], "room": ["co2_ppm", "rh_percent"]}
    twins = (LocalSensor("hot", "tmp117", 0x48), LocalSensor("cold", "tmp117", 0x49))
    with pytest.raises(ValueError, match="'hot' and 'cold' both report temperature_c"):
        LocalI2CSource(cfg(twins), KEY, r.clock, r.bus)


def test_the_pipelines_epoch_is_a_floor_even_without_the_state_file(tmp_path):
    r = rig()
    assert LocalI2CSource(cfg(), KEY, r.clock, r.bus, epoch_floor=7).boot_epoch == 8
    # a stale state file (restored from an old backup): its pending epoch-1 readings are
    # replays to a gateway that accepted epoch 3; they become a gap, the rest flows
    path = str(tmp_path / "local-i2c.json")
    agent = Agent(accept=False)
    src = by_hand(LocalI2CSource(cfg(), KEY, r.clock, r.bus, state_path=path, status_every_n=0), agent)
    src.sample_once()
    agent.accept = True
    agent.ingest.load_replay_state({"v": 1, "devices": {DEV: {"e": 3, "r": [[0, 9]]}}})
    src = by_hand(LocalI2CSource(cfg(), KEY, r.clock, r.bus, state_path=path, epoch_floor=3,
                                 status_every_n=0), agent)
    assert src.boot_epoch == 4 and src.counters()["dropped"] == 1
    r.advance_s(120)
    src.sample_once()
    recs = agent.records()
    assert [(e, s, rec.get("kind", "reading")) for e, s, rec in recs] == [(4, 0, "gap"), (4, 1, "reading")]
    gap = recs[0][2]
    assert (gap["dropped"], gap["first_epoch"], gap["first_seq"], gap["last_epoch"]) == (1, 1, 0, 1)


# -- through the composition root: settings from gateway.toml, the epoch floor ------------------------
SITE = """\
config_version = 1
[site]
id = "sch1"
gateway_id = "gw1"
data_dir = "data"
[[devices]]
id = "%s"
profile = "classroom-co2"
link = "local"
[sources.i2c]
device_id = "%s"
[[sources.i2c.sensors]]
name = "room"
part = "scd4x"
address = 0x62
[[sources.i2c.sensors]]
name = "pipe"
part = "tmp117"
address = 0x48
[[sources.i2c.sensors]]
name = "no2"
part = "ads1115"
address = 0x49
calibration_file = "no2-sheet.json"
[[sources.i2c.sensors]]
name = "bin"
part = "i2cxl"
address = 0x70
empty_cm = 100.0
full_cm = 20.0
[upstream.mqtt]
host = "127.0.0.1"
tls = false
username = "gw1"
password_file = "pw"
""" % (DEV, DEV)


class Upstream:
    """A forwarder that only holds the outbox, so the test can look at the stored rows."""

    def start(self, outbox):
        self.outbox = outbox

    def stop(self, timeout_s=5.0):
        pass

    def wake(self):
        pass

    def counters(self):
        return {}

    def status(self):
        return {"connected": True, "detail": "test"}


def run_once(cfg, r):
    """Build the agent from ``cfg`` on the rig's bus, let the source's first cycle (a reading
    and a status record) be stored and acked, and return the stored rows and the agent."""
    from gateway import app
    from gateway.security import Secrets

    up = Upstream()
    agent = app.build(cfg, Secrets({"upstream.mqtt": "x" * 20}, {}, None), r.clock, forwarder=up,
                      i2c_bus=r.bus, backoff_s=0, put_timeout_s=0.05, poll_s=0.02)
    (src,) = agent.sources
    agent.start()  # the source's thread samples at once; the virtual clock moves only by its waits
    try:
        assert wait_until(lambda: agent.step(0.02) is not None and src.counters()["frames_sent"] >= 1
                          and src.counters()["pending"] == 0)
        rows = up.outbox.take(100)
        up.outbox.release_all()
    finally:
        agent.stop()
    return rows, agent


def site_rig(tmp_path):
    """The rig of SITE's four sensors (NO2 40 ppb at 21 °C, a bin 60 cm deep) and its config."""
    from gateway import config

    electrode = {"model": "ads1115", "address": 0x49, "seed": 4,
                 "inputs": {"electrode": {"zero_algorithm": 1}, "we": 0, "ae": 1},
                 "truth": {"no2_ppb": 40.0, "temperature_c": 21.0}}
    sonar = {"model": "i2cxl", "address": 0x70, "truth": {"distance_cm": 60.0, "temperature_c": 21.0}, "seed": 3}
    r = rig([electrode, sonar])
    r.set_truth(0x48, {"temperature_c": 21.0})
    (tmp_path / "no2-sheet.json").write_text(json.dumps(r.bus.devices[0x49].electrode_sheet))
    (tmp_path / "gateway.toml").write_text(SITE)
    return r, config.load(tmp_path / "gateway.toml")


def test_app_build_passes_the_sensor_settings_and_the_epoch_floor(tmp_path):
    r, cfg = site_rig(tmp_path)
    rows, agent = run_once(cfg, r)
    assert [(x.device_id, x.boot_epoch, x.seq) for x in rows] == [(DEV, 1, 0), (DEV, 1, 1)]
    v = values_of(rows[0].record)
    # the calibration sheet and the bin's depths came from gateway.toml
    assert v["no2_ppb"][1] == quality.OK and abs(v["no2_ppb"][0] - 40.0) < 15
    assert v["fill_ratio"][1] == quality.OK and abs(v["fill_ratio"][0] - 0.5) <= 0.03
    assert abs(v["temperature_c"][0] - 21.0) <= 0.1 and v["co2_ppm"][1] == quality.OK

    # the state file is lost: the pipeline's epoch is the floor, so no key is used twice
    (tmp_path / "data" / "local-i2c.json").unlink()
    r.advance_s(120)
    rows, agent = run_once(cfg, r)
    assert [(x.boot_epoch, x.seq) for x in rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    snap = agent.snapshot()
    assert snap["pipeline.accepted"] == snap["pipeline.received"] >= 1  # nothing rejected...
    assert snap.get("pipeline.duplicates", 0) == 0                      # ...nor taken for a duplicate
    assert snap["source.i2c:1.boot_epoch"] == 2
    # an ordinary restart (state file kept; the pipeline keeps this device's replay state)
    r.advance_s(120)
    rows, agent = run_once(cfg, r)
    assert [(x.boot_epoch, x.seq) for x in rows] == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    assert json.loads((tmp_path / "data" / "local-i2c.json").read_text())["pending"] == []  # saved at stop


def test_a_reading_stored_before_a_crash_and_sent_again_is_a_duplicate_not_a_new_row(tmp_path):
    r, cfg = site_rig(tmp_path)
    rows, _ = run_once(cfg, r)
    # the crash came after the commit but before the source saved the ack: its state file
    # still holds both records as pending
    state = tmp_path / "data" / "local-i2c.json"
    pending = [[1, {k: v for k, v in x.record.items() if k in ("seq", "t", "values", "kind", "counters")}]
               for x in rows]
    state.write_text(json.dumps({"v": 1, "device_id": DEV, "boot_epoch": 1, "pending": pending, "lost": None}))
    r.advance_s(120)
    rows, agent = run_once(cfg, r)
    assert [(x.boot_epoch, x.seq) for x in rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    snap = agent.snapshot()
    assert snap["pipeline.duplicates"] == 2 and snap["source.i2c:1.records_acked"] == 4
