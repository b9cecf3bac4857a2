"""Smoke test of ``scripts/bench gateway``'s drain, memory and idle-CPU sections at a tiny
size: the direct fill stores what ``Outbox.put_many`` stores, a real run (Mosquitto, the
agent, the naive forwarder, the subscriber, each its own process) delivers every reading,
and the sections have the shape docs/benchmarks.md expects. No timing is asserted."""

import os
import sqlite3

import pytest

from gateway.clock import SystemClock
from gateway.outbox import Outbox
from simulators import bench_gateway as bg
from simulators import bench_gateway_drain as bd
from simulators.broker import mosquitto_available

VALUES = [[["co2_ppm", 600 + i, "ok"], ["temperature_c", 21.0 + i / 128, "ok"],
           ["rh_percent", 40.34271240234375, "ok"], ["battery_v", 3.01, "spike"]]
          for i in range(7)]


def open_outbox(path):
    return Outbox(path, clock=SystemClock(wall_trusted=True), **bd.BOUNDS)


def table(path, sql):
    with sqlite3.connect("file:%s?mode=ro" % path, uri=True) as db:
        return db.execute(sql).fetchall()


def test_the_direct_fill_stores_what_put_many_stores(tmp_path):
    fast, slow = str(tmp_path / "fill.db"), str(tmp_path / "put.db")
    bd.fill(fast, 230, devices=7, values=VALUES)
    with open_outbox(slow) as ob:
        ob.put_many(list(bd.records(230, devices=7, values=VALUES)))
    rows = "SELECT id, device_id, boot_epoch, seq, lane, payload FROM rows ORDER BY id"
    assert table(fast, rows) == table(slow, rows) and len(table(fast, rows)) == 230
    with open_outbox(fast) as a, open_outbox(slow) as b:
        sa, sb = a.stats(), b.stats()
        assert (sa.rows, sa.bytes, sa.dropped) == (sb.rows, sb.bytes, sb.dropped)
        assert sa.rows["routine"] == 230 and sa.bytes["routine"] > 230 * 100
        first = a.take(3)
        assert [r.record for r in first] == [rec.record for rec in bd.records(3, 7, VALUES)]
        assert [r.record for r in a.take(2, raw=True)] == [
            p for (p,) in table(fast, "SELECT payload FROM rows WHERE id IN (4, 5) ORDER BY id")]


def test_records_are_round_robin_over_devices_in_seq_order():
    recs = list(bd.records(10, devices=3, values=VALUES))
    assert [(r.device_id, r.seq) for r in recs[:4]] == [
        ("sch1-rm00-co2", 0), ("sch1-rm01-co2", 0), ("sch1-rm02-co2", 0), ("sch1-rm00-co2", 1)]
    assert all(r.record["t"] == bd.T0 + r.seq * bd.INTERVAL_S + int(r.device_id[7:9])
               for r in recs)


def test_proc_readers_read_this_process():
    assert bd.proc_kb(os.getpid()) > 1000 and bd.proc_kb("self", "VmRSS") > 1000
    assert bd.proc_cpu_s(os.getpid()) > 0


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")
def test_a_tiny_run_delivers_everything_and_the_sections_have_their_shape():
    m = bd.measure(n_drain=400, n_big=700, big_drained=300, n_naive=60, n_naive_wait=20,
                   idle_s=0.5, settle_s=0.5)
    d, b = m["drain"], m["big"]
    assert d["arrived"] == d["n"] == 400 and d["rows_left"] == 0
    assert d["counters"]["forwarded"] == 400 and d["counters"]["publish_errors"] == 0
    assert b["n"] == 300 and b["rows_left"] <= 700 - 300 and b["arrived"] >= 300
    assert m["naive"]["arrived"] == m["naive"]["acked"] == 60 and m["naive"]["messages"] == 60
    assert m["naive_wait"]["acked"] == 20
    assert min(d["hwm_kb"], b["hwm_kb"], m["idle"]["up"]["hwm_kb"]) > m["python_kb"] > 0
    idle = m["idle"]
    assert idle["up"]["status"]["connected"] and not idle["refused"]["status"]["connected"]
    assert idle["refused"]["counters"]["connect_failures.network"] >= 1
    for k in ("up", "refused", "stopped", "sleep"):
        assert idle[k]["cpu_s"] >= 0
    sections = {"gateway-drain": (bd.drain_section, bd.DRAIN_HEADERS, 3),
                "gateway-rss": (bd.rss_section, bd.RSS_HEADERS, 5),
                "gateway-idle": (bd.idle_section, bd.IDLE_HEADERS, 4)}
    for name, (fn, head, n_rows) in sections.items():
        title, rows, notes = fn(m)
        assert title and len(rows) == n_rows and notes[0].startswith("**Goal:")
        assert all(len(r) == len(head) and all(isinstance(c, str) for c in r) for r in rows)
        text = bg._markdown(name, title, rows, notes, head)
        assert text.startswith("## %s\n" % name) and "`scripts/bench gateway`" in text
    assert bd.drain_section(m)[1][1][6] == "1.00"  # the naive baseline's ratio


def test_the_sections_are_registered_with_the_gateway_benchmarks():
    for name in ("gateway-drain", "gateway-rss", "gateway-idle"):
        fn, head = bg.SECTIONS[name]
        assert callable(fn) and head
