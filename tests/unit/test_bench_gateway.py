"""Smoke test of ``scripts/bench gateway``'s ingest benchmark at a tiny size: the frames are
real node frames, every durable run stores every record and acks every frame, and the
section has the shape docs/benchmarks.md expects. No timing is asserted."""

import cbor2

from protocol import frame
from protocol.senml_decode import decode_pack
from simulators import bench_gateway as bg

VALUES = [[["co2_ppm", 600 + i, "ok"], ["temperature_c", 21.0 + i / 128, "ok"],
           ["rh_percent", 40.5, "ok"], ["battery_v", 3.01, "ok"]] for i in range(7)]


def test_frames_are_authentic_node_frames_in_seq_order_with_status_records():
    keys, frames, readings, records = bg.make_frames(devices=2, frames_per_device=3,
                                                     readings_per_frame=4, status_every=5,
                                                     values=VALUES)
    assert len(frames) == 6 and records == 2 * 3 * 4
    got = {}
    for buf in frames:
        f = frame.decode_frame(buf, keys.get, expect=frame.TYPE_DATA)
        pack = decode_pack(cbor2.loads(f.payload))
        assert pack["device_id"] == f.device_id and pack["boot_epoch"] == bg.BOOT_EPOCH
        assert [r["seq"] for r in pack["records"]] == list(range(f.first_seq, f.seq_through + 1))
        got.setdefault(f.device_id, []).extend(pack["records"])
    assert list(got) == sorted(keys)  # one frame of every node, round by round
    for recs in got.values():
        kinds = [r.get("kind", "reading") for r in recs]
        assert kinds.count("status") == 2 and readings == 2 * kinds.count("reading")
        assert all(len(r["values"]) == 4 for r in recs if "kind" not in r)


def test_measure_ingest_stores_everything_and_the_section_has_its_shape():
    m = bg.measure_ingest(devices=3, frames_per_device=2, readings_per_frame=4, big_frame=6,
                          rounds=1, values=VALUES)
    assert m["stored"] == m["records"] == 3 * 2 * 4 and m["acks"] == m["frames"] == 6
    for key in ("plain", "durable", "durable_no_alarms", "pipeline", "pipeline_no_alarms",
                "decode", "outbox", "big_plain", "big_durable"):
        assert m[key] > 0, key
    assert m["profile"] and all(len(r) == 4 for r in m["profile"])
    title, rows, notes = bg.ingest_section(m)
    assert title and len(rows) == 8
    assert all(len(r) == len(bg.HEADERS) and all(isinstance(c, str) for c in r) for r in rows)
    assert rows[0][4] == "1.000"
    assert notes[0].startswith("**Goal: at least 50000 readings/s durable ingest")
    text = bg._markdown("gateway-ingest", title, rows, notes, bg.HEADERS)
    assert text.startswith("## gateway-ingest\n") and "`scripts/bench gateway`" in text
    assert "| function | calls | own s | share |" in text
