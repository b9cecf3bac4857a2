"""``civicedge gateway status|export|wipe`` (civicedge/cmd_gateway_ops.py, gateway/ops.py,
gateway/ops_export.py) against a configuration in a temporary directory (secrets 0600) and a
real outbox filled with rows, some delivered (history) and some unsent; an agent stand-in in
a child process (holding the agent lock, or the outbox open) for "is it running"."""

import csv
import io
import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from civicedge import cmd_gateway_ops as cli
from gateway import metrics, ops
from gateway.outbox import Outbox, OutboxRecord
from gateway.outbox_policy import ALARM
from protocol.senml import parse_base_name
from simulators.clock import VirtualClock
from tests.gatewaykit import device_toml, mqtt_toml, site_toml, write_site

T0 = 1767571200  # 2026-01-05T00:00:00Z: the virtual clock's wall start
KEY = "7c1f9a3e52b84d06a1e3c5f7092b4d6e"
PASSWORD = "n8Vq-3LzK-w7Rt-Y2pX-c5Hm"
ROOM, BIN = "sch1-rm12-co2", "sch1-rm14-co2"
CONFIG = (site_toml() + device_toml(ROOM) + device_toml(BIN)
          + '[[sources.serial]]\nport = "/dev/ttyUSB0"\n'
          + mqtt_toml("upstream.mqtt", "sch1-gw1", "secrets/up.password", host="mqtt.example.net",
                      ca_file="ca.pem")
          + '[metrics]\nenabled = ENABLED\nlisten = "127.0.0.1:PORT"\n')


def reading(seq, t, co2=600, flag="ok"):
    return {"seq": seq, "t": t, "values": [["co2_ppm", co2 + seq, flag],
                                           ["temperature_c", 21.5, "ok"]]}


@pytest.fixture
def site(tmp_path):
    """Write the configuration and secrets; returns a namespace-like dict."""
    def make(metrics_port=None):
        on = metrics_port is not None
        text = CONFIG.replace("ENABLED", "true" if on else "false").replace(
            "PORT", str(metrics_port if on else 9108))
        write_site(tmp_path, text, {"up.password": PASSWORD + "\n",
                                    "keys.toml": '"%s" = "%s"\n"%s" = "%s"\n' % (ROOM, KEY, BIN, KEY)},
                   ca=True, dirs=["data"])
        return {"config": str(tmp_path / "gateway.toml"), "dir": tmp_path,
                "outbox": str(tmp_path / "data" / "outbox.sqlite3")}
    return make


def fill(path, n_delivered=6, n_unsent=4):
    """Readings every 60 s from T0: the first ``n_delivered`` of each device delivered (in
    history), the rest unsent; ROOM's seq 1 is an alarm. Plus the replay state."""
    clock = VirtualClock()
    ob = Outbox(path, 1 << 24, 30 * 86400, clock)
    for dev, offset in ((ROOM, 0), (BIN, 30)):
        recs = [OutboxRecord(dev, 7, s, reading(s, T0 + offset + 60 * s),
                             ALARM if (dev, s) == (ROOM, 1) else "routine")
                for s in range(n_delivered)]
        ob.put_many(recs)
    rows = ob.take(1000)
    ob.ack([r.row_id for r in rows])
    for dev, offset in ((ROOM, 0), (BIN, 30)):
        ob.put_many([OutboxRecord(dev, 7, s, reading(s, T0 + offset + 60 * s))
                     for s in range(n_delivered, n_delivered + n_unsent)],
                    state={"replay": {"v": 1, "devices": {
                        ROOM: {"e": 7, "r": [[0, n_delivered + n_unsent - 1]]},
                        BIN: {"e": 7, "r": [[0, n_delivered + n_unsent - 1]]}}}})
    ob.close()


def run(capsys, *argv):
    status = cli.main(["gateway", *argv])
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err and KEY not in out.out + out.err
    return status, out.out, out.err


# -- status ----------------------------------------------------------------------------------------
def test_status_of_a_stopped_agent_reads_the_outbox(site, capsys):
    s = site()
    fill(s["outbox"])
    status, out, err = run(capsys, "status", "--config", s["config"])
    assert status == 0 and err == ""
    assert "agent:    NOT running" in out
    assert "unsent: 8 rows (alarm 0, routine 8)" in out
    assert "history:  12 delivered rows" in out
    assert "dropped by policy: 0" in out and "gap markers waiting to go upstream: 0" in out
    assert ROOM in out and BIN in out and "7:9" in out  # last accepted key from the state
    assert "note:     the agent is not running" in out


def test_status_json_has_the_figures(site, capsys):
    s = site()
    fill(s["outbox"])
    status, out, _ = run(capsys, "status", "--config", s["config"], "--json")
    st = json.loads(out)
    assert status == 0 and st["agent"]["running"] is False and st["agent"]["metrics_url"] is None
    ob = st["outbox"]
    assert ob["unsent"] == {"alarm": 0, "routine": 8, "total": 8}
    assert ob["oldest_unsent_age_s"] == 0.0
    assert ob["oldest_unsent_received"] == "2026-01-05T00:00:00Z"
    assert st["history"]["rows"] == 12
    assert st["history"]["oldest"] == "2026-01-05T00:00:00Z"
    assert st["history"]["newest"] == "2026-01-05T00:05:30Z"
    devs = {d["id"]: d for d in st["devices"]}
    assert devs[ROOM]["unsent"] == 4 and devs[ROOM]["last_key"] == [7, 9]
    assert devs[ROOM]["last_seen"] == "2026-01-05T00:00:00Z"  # when the gateway stored it


def test_status_says_when_the_tls_alarm_stands(site, capsys):
    s = site()
    fill(s["outbox"])
    ob = Outbox(s["outbox"], 1 << 24, 30 * 86400, VirtualClock())
    ob.put_many([], state={"links": {"active": {"forwarder": {"since": T0, "raised_at": T0}}}})
    ob.close()
    status, out, _ = run(capsys, "status", "--config", s["config"])
    assert status == 0
    assert "note:     ALARM tls_failure: forwarder keeps refusing TLS: check ca_file" in out


def test_status_before_the_agent_ever_ran(site, capsys):
    s = site()
    status, out, _ = run(capsys, "status", "--config", s["config"])
    assert status == 0
    assert "does not exist yet" in out and "never" in out


def test_status_while_another_connection_holds_a_write_transaction(site, capsys):
    import sqlite3
    s = site()
    fill(s["outbox"])
    writer = sqlite3.connect(s["outbox"], isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE meta SET value = value + 1000 WHERE key = 'rows_routine'")
    try:
        status, out, _ = run(capsys, "status", "--config", s["config"], "--json")
        assert status == 0
        assert json.loads(out)["outbox"]["unsent"]["routine"] == 8  # the committed state
    finally:
        writer.execute("ROLLBACK")
        writer.close()


AGENT_STANDIN = textwrap.dedent("""
    import sys, time
    from gateway import ops
    from gateway.outbox import Outbox
    from simulators.clock import VirtualClock
    data_dir, outbox = sys.argv[1], sys.argv[2]
    keep = ops.hold_agent_lock(data_dir) if sys.argv[3] == "lock" else None
    ob = Outbox(outbox, 1 << 24, 86400, VirtualClock()) if sys.argv[3] == "open" else None
    print("ready", flush=True)
    sys.stdin.read()
""")


@pytest.fixture
def standin(site):
    procs = []

    def start(s, how):
        p = subprocess.Popen([sys.executable, "-c", AGENT_STANDIN, str(s["dir"] / "data"),
                              s["outbox"], how], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=os.getcwd())
        procs.append(p)
        assert p.stdout.readline().strip() == "ready"
        return p
    yield start
    for p in procs:
        p.stdin.close()
        p.wait(10)


@pytest.mark.parametrize("how", ["lock", "open"])
def test_a_running_agent_is_seen_and_wipe_refuses(site, standin, capsys, how):
    s = site()
    fill(s["outbox"])
    p = standin(s, how)
    status, out, _ = run(capsys, "status", "--config", s["config"], "--json")
    st = json.loads(out)
    assert st["agent"]["running"] is True and st["agent"]["pid"] == p.pid
    def files():
        return sorted(os.listdir(s["dir"] / "data")) + sorted(os.listdir(s["dir"] / "secrets"))
    before = files()
    status, out, err = run(capsys, "wipe", "--config", s["config"], "--yes")
    assert status == cli.EXIT_RUNNING == 4 and "stop it first" in err
    assert files() == before


def test_status_with_the_metrics_endpoint_up(site, capsys):
    srv = metrics.MetricsServer("127.0.0.1", 0, lambda: {
        "pipeline.received": 42, "forwarder.forwarded": 40, "forwarder.connected": 1,
        "last_seen_s." + BIN: T0 + 3600})
    try:
        s = site(metrics_port=srv.port)
        fill(s["outbox"])
        status, out, _ = run(capsys, "status", "--config", s["config"])
        assert status == 0
        assert "metrics answer at %s" % srv.url in out
        assert "live:     received 42, forwarded 40" in out and "upstream connected" in out
        assert "2026-01-05T01:00:00Z" in out  # BIN's last input, live
    finally:
        srv.stop()


# -- export ----------------------------------------------------------------------------------------
def csv_rows(text):
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(cli.ops_export.CSV_COLUMNS)
    return rows[1:]


def test_export_csv_is_the_time_range_in_time_order(site, capsys):
    s = site()
    fill(s["outbox"])
    status, out, err = run(capsys, "export", "--config", s["config"], "--from",
                           "2026-01-05T00:01:00Z", "--to", "2026-01-05T00:08:00")
    assert status == 0
    rows = csv_rows(out)
    times = [r[3] for r in rows]
    assert times == sorted(times)
    assert times[0] == "2026-01-05T00:01:00Z" and times[-1] == "2026-01-05T00:07:30Z"  # [from, to)
    keys = [(r[0], int(r[2])) for r in rows[::2]]
    assert keys == [(ROOM, 1), (BIN, 1), (ROOM, 2), (BIN, 2), (ROOM, 3), (BIN, 3), (ROOM, 4),
                    (BIN, 4), (ROOM, 5), (BIN, 5), (ROOM, 6), (BIN, 6), (ROOM, 7), (BIN, 7)]
    assert rows[0] == [ROOM, "7", "1", "2026-01-05T00:01:00Z", "co2_ppm", "601", "ppm", "ok"]
    assert rows[1] == [ROOM, "7", "1", "2026-01-05T00:01:00Z", "temperature_c", "21.5", "Cel", "ok"]
    assert "exported 14 records (28 values, 4 not yet delivered upstream)" in err


def test_export_one_device_to_a_file(site, capsys):
    s = site()
    fill(s["outbox"])
    out_path = s["dir"] / "open-data.csv"
    status, out, err = run(capsys, "export", "--config", s["config"], "--device", BIN,
                           "--out", str(out_path))
    assert status == 0 and out == ""
    rows = csv_rows(out_path.read_text())
    assert {r[0] for r in rows} == {BIN} and [int(r[2]) for r in rows[::2]] == list(range(10))
    assert not os.path.exists(str(out_path) + ".partial")


def test_export_places_an_untimed_record_at_its_receive_time_flagged(site, capsys):
    s = site()
    ob = Outbox(s["outbox"], 1 << 24, 86400, VirtualClock())
    untimed = {"seq": 0, "t": None, "values": [["co2_ppm", 700, "time_unsynced"],
                                                ["temperature_c", None, "sensor_failed"]],
               "rx_t": T0 + 120}
    ob.put_many([OutboxRecord(ROOM, 8, 0, untimed), OutboxRecord(ROOM, 8, 1, reading(1, T0 + 60))])
    ob.close()
    status, out, _ = run(capsys, "export", "--config", s["config"])
    rows = csv_rows(out)
    assert [(r[2], r[3], r[4], r[5], r[7]) for r in rows] == [
        ("1", "2026-01-05T00:01:00Z", "co2_ppm", "601", "ok"),
        ("1", "2026-01-05T00:01:00Z", "temperature_c", "21.5", "ok"),
        ("0", "2026-01-05T00:02:00Z", "co2_ppm", "700", "time_unsynced"),
        ("0", "2026-01-05T00:02:00Z", "temperature_c", "", "sensor_failed")]


def resolve(senml):
    """RFC 8428 §4.6 resolution of a SenML JSON array, plus the profile's base extensions:
    ``(device, bepoch, bseq, bkind, time, name, unit, value, flag)`` per record."""
    base = {"bn": "", "bt": 0, "bepoch": None, "bkind": "reading"}
    out = []
    for r in senml:
        for k in ("bn", "bt", "bepoch", "bkind", "bseq"):
            if k in r:
                base[k] = r[k]
        _, dev = parse_base_name(base["bn"])
        out.append((dev, base["bepoch"], base["bseq"], base["bkind"], base["bt"] + r.get("t", 0),
                    base["bn"] + r["n"], r.get("u"), r.get("v", r.get("vs")), r.get("flag_", "ok")))
    return out


def test_export_senml_resolves_to_the_same_values_as_csv(site, capsys):
    s = site()
    fill(s["outbox"])
    status, out, _ = run(capsys, "export", "--config", s["config"], "--format", "senml",
                         "--to", "2026-01-05T00:03:00Z")
    assert status == 0
    got = resolve(json.loads(out))
    _, out_csv, _ = run(capsys, "export", "--config", s["config"], "--to", "2026-01-05T00:03:00Z")
    rows = csv_rows(out_csv)
    assert len(got) == len(rows) == 12
    names = {"co2_ppm": "co2", "temperature_c": "temp"}
    for g, r in zip(got, rows):
        dev, epoch, seq, kind, t, name, unit, value, flag = g
        assert (dev, str(epoch), str(seq), kind) == (r[0], r[1], r[2], "reading")
        assert ops.iso(t) == r[3] and name.endswith(":" + names[r[4]]) and unit == r[6]
        assert str(value) == r[5] and flag == r[7]


def test_an_empty_senml_export_is_an_empty_array(site, capsys):
    s = site()
    fill(s["outbox"])
    status, out, _ = run(capsys, "export", "--config", s["config"], "--format", "senml",
                         "--from", "2030-01-01")
    assert status == 0 and json.loads(out) == []


@pytest.mark.parametrize("argv,words", [
    (["--from", "yesterday"], "--from 'yesterday' is not an ISO-8601"),
    (["--from", "2026-01-05", "--to", "2026-01-05"], "is not before --to"),
])
def test_export_refuses_a_bad_range(site, capsys, argv, words):
    s = site()
    fill(s["outbox"])
    status, _, err = run(capsys, "export", "--config", s["config"], *argv)
    assert status == 2 and words in err


def test_export_without_an_outbox_says_where_it_looked(site, capsys):
    s = site()
    status, _, err = run(capsys, "export", "--config", s["config"])
    assert status == 1 and "no outbox at %s" % s["outbox"] in err


# -- wipe ------------------------------------------------------------------------------------------
def test_wipe_removes_exactly_the_database_state_and_secrets(site, capsys):
    s = site()
    fill(s["outbox"])
    d = s["dir"]
    (d / "data" / "local-i2c.json").write_text("{}")
    (d / "data" / "notes.txt").write_text("not the agent's")
    for name in ("-wal", "-shm"):
        open(s["outbox"] + name, "ab").close()
    os.link(d / "secrets" / "keys.toml", d / "keys-hardlink")  # to see the overwrite
    status, out, _ = run(capsys, "wipe", "--config", s["config"], "--yes")
    assert status == 0
    left = sorted(str(p.relative_to(d)) for p in d.rglob("*"))
    assert left == ["ca.pem", "data", "data/notes.txt", "gateway.toml", "keys-hardlink", "secrets"]
    assert (d / "keys-hardlink").read_bytes() == bytes(len('"%s" = "%s"\n' % (ROOM, KEY)) * 2)
    for path in (s["outbox"], s["outbox"] + "-wal", s["outbox"] + "-shm",
                 str(d / "data" / "local-i2c.json"), str(d / "secrets" / "up.password")):
        assert path in out
    assert "overwritten" in out and "revoke" in out


def test_wipe_asks_and_removes_nothing_unless_confirmed(site, capsys):
    s = site()
    fill(s["outbox"])
    status, out, err = run(capsys, "wipe", "--config", s["config"])  # stdin is no terminal
    assert status == cli.EXIT_ABORTED == 5 and "nothing was removed" in err
    assert os.path.exists(s["outbox"]) and os.path.exists(s["dir"] / "secrets" / "keys.toml")
    args = cli.build_parser().parse_args(["gateway", "wipe", "--config", s["config"]])
    shown = []
    assert cli._wipe(args, confirm=lambda plan: shown.append(plan) or False) == 5
    assert [w for _, w in shown[0]] == ["database", "secret", "secret"]
    assert cli._wipe(args, confirm=lambda plan: True) == 0
    assert not os.path.exists(s["outbox"])


def test_wipe_with_nothing_there(site, capsys):
    s = site()
    for f in (s["dir"] / "secrets").iterdir():
        f.unlink()
    status, out, _ = run(capsys, "wipe", "--config", s["config"], "--yes")
    assert status == 0 and "nothing to remove" in out


def test_the_commands_run_as_a_program(site):
    s = site()
    fill(s["outbox"])
    p = subprocess.run([sys.executable, "-m", "civicedge.cmd_gateway_ops", "gateway", "export",
                        "--config", s["config"], "--format", "senml"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)) == 40  # 20 records, 2 values each


def test_export_into_a_fifo_writes_it_and_never_replaces_it(site, capsys):
    import threading
    s = site()
    fill(s["outbox"])
    fifo = s["dir"] / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    status, _, _ = run(capsys, "export", "--config", s["config"], "--out", str(fifo))
    reader.join(10)
    assert status == 0 and len(csv_rows(got[0])) == 40
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and not os.path.exists(str(fifo) + ".partial")


def test_wipe_leaves_what_is_not_a_regular_file(site, capsys):
    s = site()
    pw = s["dir"] / "secrets" / "up.password"
    pw.unlink()
    os.mkfifo(pw)  # a configuration mistake: never unlinked, never opened for writing
    status, out, _ = run(capsys, "wipe", "--config", s["config"], "--yes")
    assert status == 0 and "left in place: %s is not a regular file" % pw in out
    assert stat.S_ISFIFO(os.lstat(pw).st_mode)
    assert not (s["dir"] / "secrets" / "keys.toml").exists()
