"""``gateway-ingest``'s workload (``simulators.bench_gateway``): real node frames made as nodes
make them (``make_frames``), the agent and its outbox as the bench builds them, and the
durable run through the real ``gateway.agent.Agent`` (``durable_run``)."""

import time

DEVICES = 50
READINGS_PER_FRAME = 16      # FramedLink.max_batch_records default (firmware/app/links/framed.py)
BIG_FRAME = 40               # about the most 4-value readings a 4096-byte frame holds
FRAMES_PER_DEVICE = 24       # frames each node sends in a run (its backlog)
STATUS_EVERY = 30            # classroom-co2 status_every_n_cycles
INTERVAL_S = 120             # classroom-co2 interval_s
BOOT_EPOCH = 7
ROUNDS = 5
GOAL_RATE = 50000            # readings/s (issue 4)
T0 = 1767225600              # 2026-01-01T00:00:00Z, as simulators/bench_node.py
SITE_TZ = "Europe/London"


def _classroom_values():
    """The readings (CO2, T, RH) of one simulated classroom day as the real drivers produce
    them (``simulators.daysim``, seed 1), each with ``battery_v`` as the 4th value (3.0 V in
    10 mV steps, seeded noise: ``simulators/bench_node.py``'s "4-value reading")."""
    import random

    from simulators import daysim

    by_t = {}
    for s in daysim.run_day("classroom-co2", seed=1, duration_s=daysim.DAY_S):
        by_t.setdefault(s.t_s, []).append([s.quantity, s.reading, "ok"])
    rng = random.Random(1)
    return [by_t[t] + [["battery_v", round(rng.gauss(3.0, 0.01), 2), "ok"]]
            for t in sorted(by_t)]


def _start():
    return time.perf_counter(), time.process_time()


def _since(t0):
    """``(wall s, CPU s of this process)`` since ``_start()``'s ``t0``."""
    return time.perf_counter() - t0[0], time.process_time() - t0[1]


def _chunks(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def make_frames(devices=DEVICES, frames_per_device=FRAMES_PER_DEVICE,
                readings_per_frame=READINGS_PER_FRAME, status_every=STATUS_EVERY, values=None):
    """Node frames as nodes send their logs: ``devices`` classroom nodes (``sch1-rmNN-co2``),
    each ``frames_per_device`` data frames of ``readings_per_frame`` records in seq order (a
    status record after every ``status_every`` readings takes a record's place, as in the
    firmware's log), ordered round by round: one frame of every node, then the next. Returns
    ``(keys, frames, readings, records)``: device keys, the frames (bytes), and how many
    readings and records (readings + status) they carry."""
    from protocol import frame, senml

    values = values if values is not None else _classroom_values()
    keys = {"sch1-rm%02d-co2" % i: bytes((i * 7 + j) & 0xFF for j in range(16))
            for i in range(devices)}
    per_device, readings, records = [], 0, 0
    for d, dev in enumerate(keys):
        log, cycle = [], d * 37            # each node at another point of the day
        while len(log) < frames_per_device * readings_per_frame:
            cycle += 1
            t = T0 + cycle * INTERVAL_S + d
            log.append({"seq": len(log), "t": t, "values": values[cycle % len(values)]})
            if cycle % status_every == 0:
                log.append({"seq": len(log), "t": t, "kind": "status",
                            "values": [["boot_reason", "poweron", "ok"]],
                            "counters": {"boots": 1, "cycles": cycle, "i2c_errors": 0,
                                         "log_bytes": 115 * len(log)}})
        log = log[:frames_per_device * readings_per_frame]
        records += len(log)
        readings += sum(1 for r in log if "kind" not in r)
        per_device.append([frame.encode_data(keys[dev], dev, BOOT_EPOCH, chunk[0]["seq"],
                                             len(chunk), senml.encode_pack(dev, BOOT_EPOCH, chunk))
                           for chunk in _chunks(log, readings_per_frame)])
    frames = [dev_frames[i] for i in range(frames_per_device) for dev_frames in per_device]
    return keys, frames, readings, records


def _alarm_engine(devices):
    """The classroom-co2 profile's alarm rules for every device, in UK local time (what
    ``gateway.app.build`` gives a site)."""
    import tomllib
    import zoneinfo

    from gateway.alarms import AlarmEngine, rules_from_profile
    from simulators.mpyrun import REPO

    with open(REPO / "hardware" / "profiles" / "classroom-co2.toml", "rb") as f:
        profile = tomllib.load(f)
    return AlarmEngine({dev: rules_from_profile(profile) for dev in devices},
                       tz=zoneinfo.ZoneInfo(SITE_TZ))


def _ingest(keys, alarms):
    from gateway.pipeline import Ingest

    return Ingest(keys, alarms=_alarm_engine(keys) if alarms else None)


def _open_outbox(path, clock=None):
    from gateway.clock import SystemClock
    from gateway.outbox import Outbox

    # bounds far above the run: nothing is dropped, every row is an insert
    return Outbox(path, max_bytes=1 << 40, max_age_s=365 * 86400.0,
                  clock=clock or SystemClock(wall_trusted=True))


def durable_run(keys, frames, path, frames_per_batch=DEVICES, alarms=True):
    """The real ``gateway.agent.Agent`` (no sources, no forwarder) over ``frames``, into a
    new outbox at ``path``: ``frames_per_batch`` arrivals queued through ``sink``, then
    ``step`` until the queue is empty (each step: ingest, ONE ``put_many`` with the state,
    commit, acks). Returns ``((wall s, CPU s), records_stored, acks)``."""
    from gateway.agent import Agent
    from gateway.clock import SystemClock
    from gateway.sources import FRAME, Arrival

    clock = SystemClock(wall_trusted=True)
    agent = Agent(_ingest(keys, alarms), _open_outbox(path, clock), clock, gateway_id="gw-bench",
                  batch_max=frames_per_batch)
    acked = []
    arrivals = [Arrival(FRAME, f, "bench", reply=acked.append) for f in frames]
    agent.start()
    try:
        t0 = _start()
        for batch in _chunks(arrivals, frames_per_batch):
            for a in batch:
                agent.sink(a)
            while agent.step(0):
                pass
        seconds = _since(t0)
        stored = agent.counters.get("records_stored", 0)
    finally:
        agent.stop()
    return seconds, stored, len(acked)
