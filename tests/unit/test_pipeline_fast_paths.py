"""The ingest path's shortcuts give what the plain way gives: a frame's records evaluated by
the alarm rules in one ``observe_many`` call and one ``observe`` at a time; the replay
state as JSON text and ``json.dumps`` of ``replay_state()``, through commits, rollbacks and
``forget``; the outbox's counters and the rows it stores; and the agent's loop leaves the
cycle collector as it found it."""

import gc
import json

from gateway.agent import Agent
from gateway.alarms import AlarmEngine, build_rule
from gateway.outbox import Outbox
from gateway.outbox_policy import ROW_OVERHEAD_BYTES
from gateway.pipeline import ALARM, ROUTINE, Ingest
from gateway.sources import FRAME, Arrival
from protocol import frame, senml
from simulators.clock import VirtualClock

KEY = bytes(range(16, 48))
DEV, DEV2 = "sch1-rm12-co2", "sch1-rm13-co2"
T0 = 1771236000  # 2026-02-16 10:00 UTC


def engine():
    rules = [build_rule({"id": "co2_high", "quantity": "co2_ppm", "rule": "above_for",
                         "threshold": 1500, "duration_s": 600, "clear_for_s": 300}),
             build_rule({"id": "co2_hour", "quantity": "co2_ppm", "rule": "mean_above",
                         "window": "hour", "threshold": 1000})]
    return AlarmEngine({DEV: rules, DEV2: rules})


def records():
    """A morning of CO2: rising past both thresholds, then falling; with a flagged value, a
    record without a time, a gap record and a status record on the way."""
    out, seq = [], 0
    for i in range(60):
        co2 = 600 + 40 * i if i < 40 else 2200 - 60 * (i - 40)
        rec = {"seq": seq, "t": T0 + 120 * i, "values": [["co2_ppm", co2, "ok"],
                                                        ["temperature_c", 21.5, "ok"]]}
        if i == 7:
            rec["values"][0][2] = "spike"
        if i == 11:
            rec["t"] = None
        out.append(rec)
        seq += 1
        if i == 20:
            out.append({"seq": seq, "t": T0 + 120 * i, "kind": "gap", "dropped": 2,
                        "first_seq": seq - 3, "last_seq": seq - 2})
            seq += 1
        if i == 30:
            out.append({"seq": seq, "t": T0 + 120 * i, "kind": "status",
                        "values": [["boot_reason", "poweron", "ok"]], "counters": {"boots": 1}})
            seq += 1
    return out


def test_observe_many_gives_what_observing_one_record_at_a_time_gives():
    recs, one, many = records(), engine(), engine()
    by_one = [[e.to_dict() for e in one.observe(DEV, 7, r, T0 + 1320)] for r in recs]
    by_one += [[e.to_dict() for e in one.observe(DEV, 7, r, T0 + 1320)] for r in recs[:5]]
    by_many = []
    for i in range(0, len(recs), 16):  # frame by frame, as the pipeline calls it
        by_many += [[e.to_dict() for e in evs]
                    for evs in many.observe_many(DEV, 7, recs[i:i + 16], T0 + 1320)]
    by_many += [[e.to_dict() for e in evs] for evs in many.observe_many(DEV, 7, recs[:5])]
    assert by_many == by_one
    assert {e["kind"] for evs in by_one for e in evs} >= {"raised", "cleared"}
    assert many.state() == one.state() and many.counters == one.counters
    assert one.counters["skipped_duplicate"] == 5 and one.counters["excluded_flagged"] == 2
    assert many.observe_many("nobody", 7, recs[:3]) == [[], [], []]
    assert many.observe_many(DEV, -1, recs[:2]) == [[], []]


def test_observe_many_rolls_back_like_observe():
    eng = engine()
    eng.observe_many(DEV, 7, records()[:10])
    eng.commit()
    before = eng.state_json()
    eng.observe_many(DEV, 7, records()[10:40])
    assert eng.state_json() != before
    eng.rollback()
    assert eng.state_json() == before


def data_frame(recs, device=DEV, epoch=7):
    return frame.encode_data(KEY, device, epoch, recs[0]["seq"], len(recs),
                             senml.encode_pack(device, epoch, recs))


def text_is_dumps(ing):
    assert ing.replay_state_json() == json.dumps(ing.replay_state(), separators=(",", ":"))


def test_the_replay_state_text_is_json_dumps_of_the_replay_state_throughout():
    ing = Ingest({DEV: KEY, DEV2: KEY})
    recs = records()
    text_is_dumps(ing)
    for dev in (DEV, DEV2):
        assert ing.ingest_frame(data_frame(recs[:8], dev), "s").accepted
    text_is_dumps(ing)
    ing.commit()
    text_is_dumps(ing)
    assert ing.ingest_frame(data_frame(recs[20:24]), "s").accepted  # a second range
    text_is_dumps(ing)
    ing.rollback()
    text_is_dumps(ing)
    assert json.loads(ing.replay_state_json())["devices"][DEV] == {"e": 7, "r": [[0, 7]]}
    assert ing.ingest_frame(data_frame(recs[:3], epoch=9), "s").accepted  # a new epoch
    ing.commit()
    text_is_dumps(ing)
    ing.forget(DEV2)
    text_is_dumps(ing)
    ing.commit()
    ing.load_replay_state({"v": 1, "devices": {DEV2: {"e": 3, "r": [[1, 2], [5, 9]]}}})
    text_is_dumps(ing)


def test_a_frame_mixing_duplicates_and_new_records_keeps_pack_order():
    ing = Ingest({DEV: KEY}, alarms=engine())
    recs = records()
    assert ing.ingest_frame(data_frame(recs[2:5]), "s").accepted
    ing.commit()
    res = ing.ingest_frame(data_frame(recs[0:8]), "s")
    assert [r.seq for r in res.records] == list(range(8))
    assert [r.duplicate for r in res.records] == [False, False, True, True, True] + [False] * 3
    assert res.counters["duplicates"] == 3 and all(r.lane == ROUTINE for r in res.records)
    held = frame.encode_data(KEY, DEV, 7, 8, 2, senml.encode_pack(DEV, 7, recs[8:12]))
    res = ing.ingest_frame(held, "s")  # records past the frame's range are held back
    assert [r.seq for r in res.records] == [8, 9] and res.counters["records_held.seq_range"] == 2


def test_put_many_counts_the_bytes_sqlite_stores(tmp_path):
    clock = VirtualClock()
    box = Outbox(tmp_path / "o.db", max_bytes=1 << 30, max_age_s=86400.0, clock=clock)
    recs = records()
    rows = [(DEV, 7, r["seq"], r, ALARM if i % 9 == 0 else ROUTINE) for i, r in enumerate(recs)]
    put = box.put_many(rows[:30])
    assert len(put.new) == 30 and not put.duplicates
    put = box.put_many(rows[25:40] + rows[35:36] + [(DEV2, 7, 0, {"é": 1.5}, ROUTINE)])
    assert len(put.new) == 11 and len(put.duplicates) == 6  # five stored, one twice here
    st = box.stats()
    for lane in (ALARM, ROUTINE):
        n, payload, dev = box._db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0), "
            "coalesce(sum(length(CAST(device_id AS BLOB))), 0) FROM rows WHERE lane = ?",
            (lane,)).fetchone()
        assert st.rows[lane] == n and st.bytes[lane] == payload + 2 * dev + n * ROW_OVERHEAD_BYTES
    stored = box._db.execute("SELECT payload FROM rows WHERE device_id = ?", (DEV2,)).fetchone()
    assert stored[0] == '{"\\u00e9":1.5}'
    box.close()


def test_the_loop_leaves_the_cycle_collector_as_it_found_it(tmp_path):
    clock = VirtualClock()
    box = Outbox(tmp_path / "o.db", max_bytes=1 << 30, max_age_s=86400.0, clock=clock)
    agent = Agent(Ingest({DEV: KEY}), box, clock, gateway_id="gw")
    acks = []
    agent.start()
    try:
        agent.sink(Arrival(FRAME, data_frame(records()[:4]), "s", reply=acks.append))
        assert gc.isenabled() and agent.step(0) == 1 and gc.isenabled() and len(acks) == 1
        gc.disable()
        try:
            agent.sink(Arrival(FRAME, data_frame(records()[4:8]), "s", reply=acks.append))
            assert agent.step(0) == 1 and not gc.isenabled() and len(acks) == 2
        finally:
            gc.enable()
    finally:
        agent.stop()
