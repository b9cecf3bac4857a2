"""One simulated gateway: the real agent (``gateway.app.build`` on the gateway's own
configuration and 0600 secrets), in its own process, on the fleet's virtual clock::

    python -m simulators.fleet.gateway_child CONFIG CLOCK_FILE START_WALL_S

A process of its own, so a power cut is a real SIGKILL (SQLite's journal and the outbox's
recovery are what is tested) and the agent gets the second CPU core.

``CLOCK_FILE`` is the fleet's ``Timeline`` published by the runner: 24 bytes, a sequence
byte, 7 bytes of padding, then little-endian ``u64`` the global virtual time (µs since the
scenario's start) and ``f64`` this gateway's wall clock offset (s: a clock-jump fault). The
two values are written a byte at a time (``struct`` packs standard sizes so), so a reader in
another process could see half an update (a time up to ~72 min off, either way, for one
read: the agent's running time took each forward spike as elapsed and ran hours ahead,
which closed a day's alarm window early); so the writer makes the sequence byte odd, writes
the values and makes it even again, and a reader takes a read only if the byte was even and
the same before and after it (a sequence lock; one byte is read and written whole). The
agent's ticks and wall time come from it (``FleetClock``); its own waits (backoff, polls)
are real time, so the forwarder's reconnect backoff is scaled down (``BACKOFF_S``): while
the council's broker is away it retries every second or so of real time, however much
virtual time passes.

Every security check runs as ``civicedge gateway run`` runs them except the refusal to run
as root (the simulation runs as whoever runs it); any other finding stops it.

Commands on stdin, one per line, answered with one JSON line on stdout:
``snapshot`` (``Agent.snapshot()``), ``backlog`` (rows in the outbox), ``disk_full`` /
``disk_ok`` (cap the outbox file at its current size, as a full disk does / lift the cap),
``stop`` (stop as SIGTERM does: store what is queued, close).

Profiling (a measuring aid, never used by the runner): with ``CIVICEDGE_GW_PROFILE=DIR`` in
its environment every thread of the child runs under ``cProfile`` timed by its own CPU time
(``time.thread_time``: threads waiting in ``select`` cost nothing) and, at the exit, each
thread's statistics are written to ``DIR/gw-<pid>-<n>-<thread>.prof`` (``pstats`` reads them).
The timer is a system call per event, so call-heavy code looks ~4x costlier than it is:
compare proportions, and CPU-seconds from an unprofiled run.
"""

import json
import mmap
import struct
import sys
import threading
import time

from drivers.clock import TICKS_PERIOD, WallTrust, ticks_add, ticks_diff

CLOCK = struct.Struct("<Qd")
CLOCK_AT = 8             # the values' offset in the file, after the sequence byte (module docstring)
CLOCK_BYTES = CLOCK_AT + CLOCK.size
_READ_SPINS = 1000       # a write takes ~1 µs: reads retried at once this many times,
_READ_WAITS = 25_000     # then every 0.2 ms (the runner's process descheduled mid-write), ~5 s
NO_CAP_BYTES = 1 << 40
BACKOFF_S = (0.1, 1.0)  # the forwarder's reconnect backoff here, real s (see main)


class ClockFile:
    """The runner's side: publishes G and each gateway's wall offset (module docstring)."""

    def __init__(self, path):
        with open(path, "wb") as f:
            f.write(bytes(CLOCK_BYTES))
        self._f = open(path, "r+b")
        self._map = mmap.mmap(self._f.fileno(), CLOCK_BYTES)
        self._lock = threading.Lock()  # the timeline's thread and the director's both write
        self.offset_s = 0.0
        self._g = 0

    def publish(self, g_us):
        with self._lock:
            self._g = g_us
            m = self._map
            seq = m[0]
            m[0] = (seq + 1) & 0xFF  # odd: being written
            CLOCK.pack_into(m, CLOCK_AT, g_us, self.offset_s)
            m[0] = (seq + 2) & 0xFF  # even: whole

    def jump(self, delta_s):
        self.offset_s += delta_s
        self.publish(self._g)

    def close(self):
        self._map.close()
        self._f.close()


class FleetClock(WallTrust):
    """The clock contract on the fleet's published time (see the module docstring)."""

    ticks_diff = staticmethod(ticks_diff)
    ticks_add = staticmethod(ticks_add)

    def __init__(self, path, start_wall_s):
        WallTrust.__init__(self, True)
        self._f = open(path, "rb")
        self._map = mmap.mmap(self._f.fileno(), CLOCK_BYTES, access=mmap.ACCESS_READ)
        self.start_wall_s = float(start_wall_s)

    def _read(self):
        """``(G µs, offset s)`` as one update left them (the sequence lock, module docstring)."""
        m = self._map
        for i in range(_READ_SPINS + _READ_WAITS):
            seq = m[0]
            if not seq & 1:
                values = CLOCK.unpack_from(m, CLOCK_AT)
                if m[0] == seq:
                    return values
            if i >= _READ_SPINS:
                time.sleep(0.0002)
        raise RuntimeError("the fleet's clock file %s stays mid-write: its writer stopped" % self._f.name)

    def ticks_ms(self):
        return (self._read()[0] // 1000) & (TICKS_PERIOD - 1)

    def sleep_ms(self, ms):
        if ms > 0:
            time.sleep(min(ms, 50) / 1000.0)  # real: the fleet's time is not ours to move

    def wall_s(self):
        g, off = self._read()
        return self.start_wall_s + g / 1e6 + off


def _secrets(cfg):
    from gateway import security

    facts = security.gather(cfg)
    findings = [f for f in security.check(cfg, facts) if "runs as root" not in str(f)]
    if findings:
        raise SystemExit("refusing to start: %s" % "; ".join(str(f) for f in findings))
    return security.secrets(cfg, facts)


def _profile_threads(out_dir):
    """Run every thread under cProfile; dump each thread's stats at exit (module docstring)."""
    import atexit
    import cProfile
    import os
    import time

    profiles = []
    run = threading.Thread.run

    def profiled_run(thread):
        p = cProfile.Profile(time.thread_time)
        profiles.append((thread.name, p))
        p.runcall(run, thread)

    def dump():
        for i, (name, p) in enumerate(profiles):
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            p.dump_stats(os.path.join(out_dir, "gw-%d-%d-%s.prof" % (os.getpid(), i, safe)))

    threading.Thread.run = profiled_run
    main_profile = cProfile.Profile(time.thread_time)
    profiles.append(("main", main_profile))
    main_profile.enable()
    atexit.register(dump)


def _backlog(agent):
    """The ``backlog`` command's answer: ``rows`` in the outbox; ``unsent``, those of them
    not delivered upstream yet (the forwarder's ``confirmed_rows`` are delivered, their
    delete to come; the rows are read first, so a row deleted meanwhile can only make
    ``unsent`` more, never less); ``queued``, arrivals the agent's loop has not taken;
    ``arrivals``, every source's count of arrivals so far (it moves whenever anything comes
    in)."""
    st = agent.outbox.stats()
    rows = sum(st.rows.values()) if isinstance(st.rows, dict) else st.rows
    fw = agent.forwarder.counters() if agent.forwarder is not None else {}
    return {"rows": rows, "unsent": max(0, rows - fw.get("confirmed_rows", 0)), "queued": agent.queued(),
            "arrivals": sum(src.counters().get("arrivals", 0) for src in agent.sources)}


def main(argv=None):
    import os

    if os.environ.get("CIVICEDGE_GW_PROFILE"):
        _profile_threads(os.environ["CIVICEDGE_GW_PROFILE"])
    from gateway import app, config
    from gateway.backoff import Backoff

    config_path, clock_path, start_wall_s = (argv or sys.argv[1:])[:3]
    cfg = config.load(config_path)
    app.setup_logging(20)
    secrets, clock = _secrets(cfg), FleetClock(clock_path, start_wall_s)
    # The agent's reconnect backoff (1-120 s) is real time, while the fleet's clock runs a
    # hundred or more times faster: scaled so that the council's broker coming back is noticed
    # within minutes of virtual time, as the real backoff notices it in minutes.
    forwarder = app.build_forwarder(cfg, secrets, clock, backoff=Backoff(*BACKOFF_S)) \
        if cfg.upstream_mqtt is not None else None
    agent = app.build(cfg, secrets, clock, forwarder=forwarder)
    stop = threading.Event()
    ready = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), kwargs={"ready": ready.set}, daemon=True)
    runner.start()
    ready.wait(60)
    say = sys.stdout
    say.write(json.dumps({"ready": ready.is_set()}) + "\n")
    say.flush()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "snapshot":
            out = agent.snapshot()
        elif cmd == "backlog":
            out = _backlog(agent)
        elif cmd == "disk_full":
            out = {"cap_bytes": agent.outbox.cap_file_bytes(agent.outbox.stats().file_bytes)}
        elif cmd == "disk_ok":
            out = {"cap_bytes": agent.outbox.cap_file_bytes(NO_CAP_BYTES)}
        elif cmd == "stop":
            break
        else:
            out = {"error": "unknown command %r" % cmd}
        say.write(json.dumps(out, default=str) + "\n")
        say.flush()
    stop.set()
    runner.join(60)
    say.write(json.dumps({"stopped": not runner.is_alive()}) + "\n")
    say.flush()


if __name__ == "__main__":
    main()
