"""The gateways forward what they hold, in real time, while the fleet's virtual time stands
still: a settle at each fault action, the drain at the end of a run.

Why: a gateway forwards upstream in real time (its forwarder's window, its reconnect
backoff, real sockets), while the fleet's virtual time runs hundreds of times faster than
real time. A backlog drained after a broker outage while virtual time ran on would show up
as minutes of virtual latency for every real second of draining, and more the faster the
host (measured: the readings held through a 45-minute outage arrived up to 504 s after its
end at ~1070x real time, up to 109 s at ~140x). So the runner's director, acting at a
barrier (nobody else runs or is released: ``timeline.py``, "Barriers"), lets the gateways
forward what they hold before and after each fault action (``settle``): what was sent
before a fault reaches the platform before it, and the backlog a fault's end releases
reaches it at that virtual instant. In the field the forwarding takes seconds, and after an
outage the real agent's reconnect backoff (up to 120 s) comes on top: the simulated latency
after an outage is the outage's own share (docs/simulation-fleet.md, "Latency").

Both poll each gateway's ``backlog`` (rows in its outbox; None from a gateway that is off)
and the platform's count of arrived records; they only wait, in real time.
"""

import time

SETTLE_S = 60.0  # real s a settle waits at most
SETTLE_STALL_S = 10.0  # ... or while no backlog falls and nothing new arrives upstream
SETTLE_QUIET_S = 0.2  # nothing new upstream this long (real s) after the backlogs are empty
SETTLE_IDLE_S = 0.05  # ... this long if they were empty from the first look (nothing on its way)
SETTLE_POLL_S = 0.02
DRAIN_S = 60.0  # real s the gateways get to forward what they hold after the end
DRAIN_QUIET_S = 2.0


def settle(gateways, arrived_count, limit_s=SETTLE_S, stall_s=SETTLE_STALL_S, quiet_s=SETTLE_QUIET_S,
           idle_s=SETTLE_IDLE_S):
    """Wait (real time) until every one of ``gateways`` (``GatewayProcess``; those whose link
    upstream is up) has an empty outbox and ``arrived_count()`` (records upstream) has not
    changed for ``quiet_s`` (``idle_s`` if every outbox was empty and nothing arrived since the
    first look); give up after ``limit_s``, or ``stall_s`` without any change. Returns the
    rows still held (0 when settled)."""
    if not gateways:
        return 0
    t0 = time.monotonic()
    last, moved_at, empty_at, wait_s = None, t0, None, idle_s
    while True:
        rows = [g.command("backlog") for g in gateways]
        held = sum(r["rows"] for r in rows if r is not None)
        state = (held, arrived_count())
        now = time.monotonic()
        if state != last:
            if last is not None:
                wait_s = quiet_s  # something moved: give the platform time to see the last of it
            last, moved_at = state, now
            empty_at = now if held == 0 else None
        if empty_at is not None and now - empty_at >= wait_s:
            return 0
        if now - t0 >= limit_s or now - moved_at >= stall_s:
            return held
        time.sleep(SETTLE_POLL_S)


def drain(gateways, arrived_count, limit_s=DRAIN_S, quiet_s=DRAIN_QUIET_S):
    """The end of a run: ``settle`` of every gateway, given ``limit_s`` (real s) in all and
    ``quiet_s`` with nothing new upstream, however long the backlogs take to fall."""
    return settle(gateways, arrived_count, limit_s=limit_s, stall_s=limit_s, quiet_s=quiet_s, idle_s=quiet_s)
