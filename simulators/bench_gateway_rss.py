"""The drain bench's ``gateway-rss`` and ``gateway-idle`` sections
(``simulators.bench_gateway_drain``): the idle agent child, the idle-CPU run (``_idle``), and
the two sections' rows and notes from ``measure``'s figures."""

import json
import os
import sys
import time

from simulators.bench_gateway_child import (
    BROKER_CONFIG, Child, _agent, _hwm, _run_agent, proc_cpu_s)
from simulators.bench_gateway_fill import fill

IDLE_S = 20.0
IDLE_SETTLE_S = 2.0         # after start-up (and the stopped broker's first reconnect)
IDLE_BACKLOG = 10_000
GOAL_RSS_MB, GOAL_CPU_PCT = 80.0, 2.0
RSS_HEADERS = ("process", "backlog (readings)", "readings drained", "peak RSS (VmHWM)",
               "ratio to the idle agent")
IDLE_HEADERS = ("process", "broker", "CPU s", "CPU % of one core",
                "ratio to the connected idle agent")


def child_idle(a):
    """Start the agent, say ``ready`` once it connected (``a["connect"]``) or tried once,
    then idle until told ``stop``; report counters, status and memory."""
    agent, _outbox, fwd = _agent(a)
    stop, t = _run_agent(agent)
    end = time.monotonic() + 10
    while time.monotonic() < end and not (
            fwd.status()["connected"] if a["connect"] else fwd.counters()["backoff_waits"]):
        time.sleep(0.05)
    print("ready", flush=True)
    sys.stdin.readline()
    out = {"counters": fwd.counters(), "status": fwd.status(), "hwm_kb": _hwm()}
    stop.set()
    t.join(10)
    print(json.dumps(out), flush=True)


def _idle(run, idle_s, settle_s=IDLE_SETTLE_S):
    """The ``gateway-idle`` figures: CPU seconds of each idle process over ``idle_s``."""
    from simulators.broker import Mosquitto, free_port

    tmp = run.tmp
    paths = {k: os.path.join(tmp, "idle-%s.db" % k) for k in ("up", "refused", "stopped")}
    fill(paths["up"], 0)
    fill(paths["refused"], IDLE_BACKLOG)
    fill(paths["stopped"], IDLE_BACKLOG)
    victim = Mosquitto(users=run.pw, extra_config=BROKER_CONFIG).start()
    try:
        kids = {"up": run.child("idle", path=paths["up"], connect=True),
                "refused": run.child("idle", path=paths["refused"], port=free_port(),
                                     connect=False),
                "stopped": run.child("idle", broker=victim, path=paths["stopped"], connect=True)}
        for kid in kids.values():
            if kid.line(60) != "ready":
                raise RuntimeError("an idle agent did not start")
        kids["sleep"] = Child(None, argv=[sys.executable, "-c", "import time; time.sleep(%d)"
                                          % (idle_s + 30)], tmp=tmp)
        run.kids.append(kids["sleep"])
        victim.stop()  # the broker goes away under a connected agent
        time.sleep(settle_s)  # past start-up and the first reconnect
        cpu0 = {k: proc_cpu_s(c.pid) for k, c in kids.items()}
        t0 = time.monotonic()
        time.sleep(idle_s)
        cpu1 = {k: proc_cpu_s(c.pid) for k, c in kids.items()}
        window = time.monotonic() - t0
        out = {"window_s": window, "backlog": IDLE_BACKLOG}
        for k, c in kids.items():
            out[k] = {"cpu_s": cpu1[k] - cpu0[k]}
            if k != "sleep":
                c.say("stop")
                out[k].update(c.line(30))
        return out
    finally:
        victim.close()


def _mb(kb):
    return "%.1f MB" % (kb / 1024.0)


def _grouped(n):
    return "{:,}".format(n)

def rss_section(m):
    """``(title, rows, notes)`` of ``gateway-rss`` from ``measure``."""
    idle = m["idle"]["up"]["hwm_kb"]
    rows = [("python alone (`python -c`)", "—", "—", _mb(m["python_kb"]),
             "%.2f" % (m["python_kb"] / idle)),
            ("**the agent, connected, empty outbox (baseline)**", "0", "—", _mb(idle), "1.00")]
    for r, backlog in ((m["drain"], m["n_drain"]), (m["big"], m["n_big"])):
        rows.append(("the agent draining its outbox", _grouped(backlog), _grouped(r["n"]),
                     _mb(r["hwm_kb"]), "%.2f" % (r["hwm_kb"] / idle)))
    nv = m["naive"]
    rows.append(("naive forwarder, its readings in memory", _grouped(nv["n"]), _grouped(nv["n"]),
                 _mb(nv["hwm_kb"]), "%.2f" % (nv["hwm_kb"] / idle)))
    peak = max(m["drain"]["hwm_kb"], m["big"]["hwm_kb"])
    b = m["big"]
    notes = [
        "**Goal: peak RSS under %.0f MB at any backlog: %s** — %s at most (%s backlog: %s; "
        "%s: %s)." % (GOAL_RSS_MB, "met" if peak / 1024.0 < GOAL_RSS_MB else "NOT met",
                      _mb(peak), _grouped(m["n_drain"]), _mb(m["drain"]["hwm_kb"]),
                      _grouped(m["n_big"]), _mb(b["hwm_kb"])),
        "Peak RSS is `VmHWM` from `/proc/<pid>/status` of the agent's process (the real "
        "`Agent` with its `MQTTForwarder`, no sources), read when the readings were acked, "
        "so it covers opening the outbox (`integrity_check`), reading it %d rows at a time "
        "and acking. Before the forwarder started it was %s (%s backlog) and %s (%s). The "
        "forwarder holds at most two takes of rows (encoded, and in flight) and the ids of "
        "the PUBACKed rows its acker has not deleted yet (it takes no more past %d), "
        "SQLite a cache of 8 MiB and 2 MiB for the reading connection; the backlog stays "
        "on disk."
        % (_take_rows(), _mb(m["drain"]["hwm_open_kb"]), _grouped(m["n_drain"]),
           _mb(b["hwm_open_kb"]), _grouped(m["n_big"]), _ack_backlog()),
        "The %s backlog (%.2f GB on disk) was made by the direct SQL fill in %.0f s (the "
        "%s one in %.1f s), and drained in %.0f s (%.0f readings/s; opening it took %.1f s). "
        "Outbox bounds were set above the backlog: the default 256 MiB would drop most of it."
        % (_grouped(m["n_big"]), m["big_bytes"] / 1e9, m["fill_big_s"], _grouped(m["n_drain"]),
           m["fill_s"], b["seconds"], b["rate"], b["open_s"]),
    ]
    return ("Peak resident memory of the agent's process while draining 1,000,000 and "
            "5,000,000 readings, against the same agent idle"), rows, notes


def idle_section(m):
    """``(title, rows, notes)`` of ``gateway-idle`` from ``measure``."""
    i = m["idle"]
    w, base = i["window_s"], i["up"]["cpu_s"]

    def row(label, broker, k):
        cpu = i[k]["cpu_s"]
        return (label, broker, "%.2f" % cpu, "%.2f %%" % (100.0 * cpu / w),
                "%.2f" % (cpu / base) if base else "—")
    rows = [row("`python -c 'import time; time.sleep(...)'`", "—", "sleep"),
            row("**the agent, connected, nothing to send (baseline)**", "up", "up"),
            row("the agent, %s readings waiting" % _grouped(i["backlog"]),
                "down: connection refused", "refused"),
            row("the agent, %s readings waiting" % _grouped(i["backlog"]),
                "down: stopped after the agent connected", "stopped")]
    worst = max(i["refused"]["cpu_s"], i["stopped"]["cpu_s"]) / w * 100.0
    rc, sc = i["refused"]["counters"], i["stopped"]["counters"]
    notes = [
        "**Goal: under %.0f %% CPU while waiting for the broker: %s** — %.2f %% of one core at "
        "most." % (GOAL_CPU_PCT, "met" if worst < GOAL_CPU_PCT else "NOT met", worst),
        "CPU is user + system time of each process from `/proc/<pid>/stat` over the same "
        "%.0f s window, all four running at once, after start-up. The agent is the real "
        "`Agent` (its loop waiting on its queue, its timers) with its `MQTTForwarder` "
        "retrying with backoff (1→120 s, jittered): refused %d connects (%d backoff waits); "
        "after the stop, %d failed connects." % (w, rc["connect_failures.network"],
                                                 rc["backoff_waits"],
                                                 sc["connect_failures.network"]),
    ]
    return "CPU of the agent's process while the broker is down", rows, notes


def _take_rows():
    from gateway.forward import mqtt as fmqtt
    return fmqtt.TAKE_MAX_ROWS


def _ack_backlog():
    from gateway.forward import mqtt as fmqtt
    return fmqtt.ACK_BACKLOG_ROWS

