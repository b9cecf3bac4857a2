"""``LinkAlarms``: the gateway's own alarm when TLS to a broker keeps failing (pure, no I/O).

Theory of operation (docs/gateway-faults.md, "Wrong CA")
--------------------------------------------------------
RELIABILITY.md's fault catalogue: on a TLS failure (wrong CA, expired certificate, a clock
before NTP) the gateway refuses, keeps buffering and **raises an alarm**. The upstream
forwarder and the MQTT sources (site broker, ChirpStack) count each refused handshake
(``connect_failures.tls``, told from a network failure by
``gateway.forward.mqtt_link.connect_failure``) and each connection (``connects``); the agent
hands every part's counters and ``status()`` to ``observe`` on a timer. Per part:

* a **streak** counts TLS failures since the part last had a connection (a connection made
  in the meantime, or the part connected now, ends it; network failures in between neither
  end nor extend it: they prove nothing about the certificate);
* a streak of ``after`` failures (3 by default: with the forwarder's backoff, about 7 s to a
  few minutes of refusals) **raises** ``tls_failure`` for the gateway: an ``AlarmEvent``
  (``device_id`` the gateway, ``quantity`` ``tls_failures``, ``value`` the streak,
  ``since`` when the streak was first seen, ``detail`` the part, its broker and last error);
* the part being connected again **clears** it.

The events go where the alarm engine's go: records of the gateway's own stream in the alarm
lane, published on ``civicedge/v1/<site>/<gateway>/alarms`` once a link is up, and logged.
Which alarms stand is state (``state()``/``load``), stored by the agent with the event
records, so a restart still clears an alarm raised before it. Parts without a
``connect_failures.tls`` counter are not watched.
"""

from gateway.alarms import CLEARED, RAISED, AlarmEvent

RULE_TLS = "tls_failure"
QUANTITY = "tls_failures"
SEVERITY = "critical"  # nothing reaches the platform until someone fixes a certificate
TLS_FAILURES, CONNECTS = "connect_failures.tls", "connects"
DEFAULT_AFTER = 3
_DETAIL_MAX = 300


class LinkAlarms:
    """Per-part TLS failure streaks and the alarms they raise for ``gateway_id``; ``after``:
    failures in a row that raise. ``state``: a ``state()`` to resume from (a malformed one
    is ignored). Raises ``ValueError`` for a bad ``after``."""

    def __init__(self, gateway_id, after=DEFAULT_AFTER, state=None):
        if isinstance(after, bool) or not isinstance(after, int) or after < 1:
            raise ValueError("after must be an int >= 1, got %r" % (after,))
        self.gateway_id, self.after = gateway_id, after
        self._seen = {}    # part -> (tls failures, connects) at the last look
        self._streak = {}  # part -> [failures in a row, wall s when first seen or None]
        self.active = {}   # part -> {"since": s, "raised_at": s}: alarms standing
        self.load(state)

    def state(self):
        """The standing alarms, JSON-able (store it with the events)."""
        return {"active": {p: dict(v) for p, v in self.active.items()}}

    def load(self, state):
        """Resume the standing alarms from ``state()`` (None or malformed: none)."""
        active = state.get("active") if isinstance(state, dict) else None
        self.active = {p: dict(v) for p, v in active.items()
                       if isinstance(p, str) and isinstance(v, dict)} \
            if isinstance(active, dict) else {}

    def observe(self, part, counters, status, now_s):
        """Look at ``part`` (a label: ``forwarder``, ``source.<name>``) through its
        ``counters()`` and ``status()`` at wall time ``now_s`` (None if untrusted). Returns
        the ``AlarmEvent``s it raises or clears (usually none)."""
        tls, conns = counters.get(TLS_FAILURES), counters.get(CONNECTS, 0)
        if not isinstance(tls, int) or not isinstance(conns, int):
            return []
        last_tls, last_conns = self._seen.get(part, (0, 0))
        self._seen[part] = (tls, conns)
        connected = bool(status.get("connected"))
        streak = self._streak.setdefault(part, [0, None])
        if connected or conns > last_conns:
            streak[:] = [0, None]
        if not connected and tls > last_tls:
            streak[0] += tls - last_tls
            streak[1] = streak[1] if streak[1] is not None else now_s
        out = []
        if part in self.active and connected:
            since = self.active.pop(part).get("since")
            out.append(self._event(CLEARED, part, 0, since, now_s, status))
        elif part not in self.active and streak[0] >= self.after:
            self.active[part] = {"since": streak[1], "raised_at": now_s}
            out.append(self._event(RAISED, part, streak[0], streak[1], now_s, status))
        return out

    def _event(self, kind, part, value, since, now_s, status):
        detail = {"part": part}
        for key in ("broker", "last_error", "detail"):
            v = status.get(key)
            if v is not None:
                detail[key] = str(v)[:_DETAIL_MAX]
        return AlarmEvent(kind, RULE_TLS, self.gateway_id, QUANTITY, value, since, now_s,
                          SEVERITY, detail)
