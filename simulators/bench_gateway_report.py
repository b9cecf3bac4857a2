"""``gateway-ingest``'s profile breakdown and section (``simulators.bench_gateway``): a cProfile
of a durable run by function and by part (``PARTS``), and the section's rows and notes from
``measure_ingest``'s figures (``ingest_section``)."""

import cProfile
import os
import pstats

from simulators.bench_gateway_workload import GOAL_RATE, ROUNDS, STATUS_EVERY, durable_run

PROFILE_TOP = 14


# The parts of a durable run whose cumulative time the section shows: "file|function|label"
PARTS = [line.split("|") for line in (
    "gateway/agent.py|_batch|the agent's batch (all that follows)",
    "gateway/pipeline.py|ingest_frame|`Ingest.ingest_frame`",
    "protocol/frame.py|decode_frame|frame check (HMAC)",
    "~|<built-in method cbor2._cbor2.loads>|`cbor2.loads`",
    "protocol/senml_usual.py|decode_usual|SenML records (`decode_usual`)",
    "gateway/alarms.py|observe_many|alarm rules (`AlarmEngine.observe_many`)",
    "protocol/frame.py|encode_ack|ack (HMAC)",
    "gateway/agent_records.py|stored_records|agent: records to store (`stored_records`)",
    "gateway/alarms.py|state_json|alarm state JSON (`AlarmEngine.state_json`)",
    "gateway/pipeline.py|replay_state_json|replay state JSON (`Ingest.replay_state_json`)",
    "gateway/outbox.py|put_many|`Outbox.put_many`",
    "gateway/outbox_policy.py|compact_json|JSON (`compact_json`: the records, the alarm state)",
    "gateway/outbox_state.py|encode_state|state check + JSON",
    "~|<method 'executemany' of 'sqlite3.Connection' objects>|SQLite inserts",
    "gateway/outbox.py|_commit|SQLite commit (fsync)")]


def _profile(keys, frames, path):
    """A cProfile of a durable run: the top functions by own time ``[(function, calls,
    own_s, share)]``, the ``PARTS`` ``[(label, cumulative share)]`` and the seconds
    profiled."""
    from simulators.mpyrun import REPO

    prof = cProfile.Profile()
    prof.enable()
    durable_run(keys, frames, path)
    prof.disable()
    stats = pstats.Stats(prof).stats
    total = sum(v[2] for v in stats.values())
    top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:PROFILE_TOP]
    root, rows = str(REPO) + os.sep, []
    for (filename, line, func), (_cc, calls, own, _cum, _callers) in top:
        if filename == "~":
            name = func
        elif filename.startswith(root):
            name = "%s:%d %s" % (filename[len(root):], line, func)
        else:
            name = "%s:%d %s" % (os.path.basename(filename), line, func)
        rows.append((name, calls, own, own / total if total else 0.0))
    parts = []
    for where, func, label in PARTS:
        cum = sum(v[3] for (filename, _line, f), v in stats.items()
                  if f == func and (filename == where or filename.endswith(os.sep + where)))
        parts.append((label, cum / total if total else 0.0))
    return rows, parts, total


# ---- the section ---------------------------------------------------------------------------

HEADERS = ("what", "readings/s", "µs/reading", "CPU µs/reading", "ratio to plain SQLite")


def ingest_section(m):
    """``(title, rows, notes)`` of the ``gateway-ingest`` section from ``measure_ingest``."""
    base = m["plain"]

    def row(label, key, ref=base):
        return (label, "%.0f" % m[key], "%.1f" % (1e6 / m[key]), "%.1f" % m[key + "_cpu_us"],
                "%.3f" % (m[key] / ref))

    rows = [
        row("plain SQLite: executemany of the same rows, a transaction per batch, WAL + "
            "synchronous=FULL (baseline)", "plain"),
        row("**durable ingest**: the agent's loop, frames → `Ingest.ingest_frame` (alarm "
            "rules on) → one `Outbox.put_many(records, state=...)` a batch → commit → acks",
            "durable"),
        row("durable ingest, no alarm rules", "durable_no_alarms"),
        row("pipeline only: `ingest_frame` (HMAC, replay, cbor2, decode, checks, alarm rules), "
            "no outbox", "pipeline"),
        row("pipeline only, no alarm rules", "pipeline_no_alarms"),
        row("decode only: `cbor2.loads` + `decode_pack`", "decode"),
        row("outbox only: `put_many` of the decoded records, no state", "outbox"),
    ]
    if "big_durable" in m:
        rows.append(row("durable ingest, frames of %d records (%.0f B); ratio to plain SQLite "
                        "for their rows (%.0f /s)" % (m["big_frame"], m["big_frame_bytes"],
                                                      m["big_plain"]),
                        "big_durable", m["big_plain"]))
    met = m["durable"] >= GOAL_RATE
    notes = [
        "**Goal: at least %d readings/s durable ingest on this 2-core machine: %s** — %.0f "
        "readings/s committed with the profile's alarm rules, %.0f without (%.2f× and %.2f× "
        "plain SQLite's rate for the same rows)."
        % (GOAL_RATE, "met" if met else "NOT met", m["durable"], m["durable_no_alarms"],
           m["durable"] / base, m["durable_no_alarms"] / base),
        "CPU µs/reading is this process's CPU time (`time.process_time`, the least of the "
        "rounds); the rest of the wall time is waiting: fsync at each commit, and other "
        "processes on the machine. The agent's loop is one thread, so its CPU alone caps "
        "durable ingest at %.0f readings/s (%.0f without alarm rules) however fast the disk."
        % (1e6 / m["durable_cpu_us"], 1e6 / m["durable_no_alarms_cpu_us"]),
        "Workload: %d classroom-co2 nodes sending their backlog, frames of %d records "
        "(4-value readings: CO2, T, RH, battery_v of one simulated day through the real "
        "drivers; a status record every %d readings), %.0f bytes a frame with its 16-byte tag; "
        "%d frames, %d readings (%d records) a run. A node keeps one frame in flight until "
        "acked, so a batch (one `put_many`, one transaction) holds one frame per node: %d "
        "frames, about %d records. The outbox and the baseline are new files in the temp "
        "directory (ext4 on a virtual disk here; a Pi's SD card syncs slower). Best of %d "
        "interleaved rounds; each durable run checks that every record was stored and every "
        "frame acked. Load average when the run began: %.1f on %d CPUs (other work on the "
        "machine slows every row, the baseline less: it is mostly waiting on the disk)."
        % (m["devices"], m["readings_per_frame"], STATUS_EVERY, m["frame_bytes"], m["frames"],
           m["readings"], m["records"], m["devices"], m["devices"] * m["readings_per_frame"],
           ROUNDS, m["load"], m["cpus"]),
    ]
    if m.get("profile"):
        lines = ["Where a durable run's time goes (cProfile of half a run, own time; the "
                 "top %d of %.2f s profiled):" % (len(m["profile"]), m["profile_total_s"]), "",
                 "| function | calls | own s | share |", "|---|---|---|---|"]
        for name, calls, own, share in m["profile"]:
            lines.append("| `%s` | %d | %.3f | %.1f %% |" % (name, calls, own, 100 * share))
        notes.append("\n".join(lines))
        notes.append("The same profile by part (cumulative time, share of the run; parts "
                     "nest): " + "; ".join("%s %.1f %%" % (label, 100 * share)
                                           for label, share in m["profile_parts"]) + ".")
    return ("Durable ingest: node frames authenticated, decoded, checked, run through the "
            "alarm rules and committed to the outbox (SQLite WAL, synchronous=FULL) by the "
            "agent's loop, readings per second, against plain SQLite inserting the same "
            "rows"), rows, notes
