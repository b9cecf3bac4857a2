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

Both poll each gateway's ``backlog`` (None from a gateway that is off) and the platform's
count of arrived records; they only wait, in real time. What a gateway holds is its outbox's
rows not yet delivered (``unsent``: its forwarder deletes PUBACKed rows together every 0.2 s,
so the rows alone would keep a settle waiting for deletes of rows the platform already has)
and the arrivals its loop has not taken (``queued``); its sources' ``arrivals`` and the
network servers' events not yet at the site's broker (``in_flight``) count as movement, so the
quiet time after the last of them only covers a broker's delivery to the platform and to the
gateways' subscriptions (milliseconds). Until session 11 the rows alone were looked at: a
settle took 0.25-0.45 s where nothing was to be forwarded, and the drain waited 2 s.
"""

import time

SETTLE_S = 60.0  # real s a settle waits at most
SETTLE_STALL_S = 10.0  # ... or while no backlog falls and nothing new arrives upstream
SETTLE_QUIET_S = 0.2  # nothing new upstream this long (real s) after the backlogs are empty
SETTLE_IDLE_S = 0.05  # ... this long if they were empty from the first look (nothing on its way)
SETTLE_POLL_S = 0.02
DRAIN_S = 60.0  # real s the gateways get to forward what they hold after the end
DRAIN_QUIET_S = 0.3


def settle(gateways, arrived_count, limit_s=SETTLE_S, stall_s=SETTLE_STALL_S, quiet_s=SETTLE_QUIET_S,
           idle_s=SETTLE_IDLE_S, in_flight=None):
    """Wait (real time) until no one of ``gateways`` (``GatewayProcess``; those whose link
    upstream is up) holds anything not yet delivered upstream (its ``backlog`` answer's
    ``unsent`` rows and ``queued`` arrivals: ``gateway_child``) and nothing has moved for
    ``quiet_s`` (``idle_s`` if nothing held or moved since the first look: nothing on its
    way). Moved: a gateway's held count or its sources' ``arrivals``,
    ``arrived_count()`` (messages upstream), or ``in_flight()`` (events not yet at the site's
    broker, e.g. the network servers' uplinks). Gives up after ``limit_s``, or ``stall_s``
    without any change. Returns what is still held (0 when settled)."""
    if not gateways:
        return 0
    t0 = time.monotonic()
    last, moved_at, empty_at, wait_s = None, t0, None, idle_s
    while True:
        rows = [g.command("backlog") for g in gateways]
        held = sum(r["unsent"] + r["queued"] for r in rows if r is not None)
        flying = in_flight() if in_flight is not None else 0
        state = (held, flying, sum(r["arrivals"] for r in rows if r is not None), arrived_count())
        now = time.monotonic()
        if state != last:
            if last is not None:
                wait_s = quiet_s  # something moved: give the platform time to see the last of it
            last, moved_at = state, now
            empty_at = now if held == 0 and flying == 0 else None
        if empty_at is not None and now - empty_at >= wait_s:
            return 0
        if now - t0 >= limit_s or now - moved_at >= stall_s:
            return held
        time.sleep(SETTLE_POLL_S)


def drain(gateways, arrived_count, limit_s=DRAIN_S, quiet_s=DRAIN_QUIET_S, in_flight=None):
    """The end of a run: ``settle`` of every gateway, given ``limit_s`` (real s) in all and
    ``quiet_s`` with nothing moving, however long the backlogs take to fall."""
    return settle(gateways, arrived_count, limit_s=limit_s, stall_s=limit_s, quiet_s=quiet_s, idle_s=quiet_s,
                  in_flight=in_flight)
