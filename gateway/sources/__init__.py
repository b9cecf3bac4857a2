"""The gateway's sources: where node frames and LoRaWAN uplinks come in.

Theory of operation
-------------------
A source owns one transport and its thread(s): a serial port (``serial.SerialSource``), the
site's MQTT broker (``site_mqtt.SiteMQTTSource``), ChirpStack's MQTT integration
(``chirpstack.ChirpStackSource``) or the sensors wired to the Pi (``local_i2c.LocalI2CSource``).
It only removes the transport's framing and counts the transport's errors; it never decodes
or authenticates a frame (the pipeline, ``gateway.pipeline.Ingest``, does). What arrives is
handed to the agent as an ``Arrival`` through ``sink(arrival) -> bool``:

* ``sink`` may block up to about a second (back-pressure from the agent's bounded queue);
  ``False`` means the queue stayed full: the source counts ``overflow`` and drops the
  arrival. It was not acked, so the node sends it again.
* ``arrival.reply(ack_bytes)`` sends the pipeline's ack back on the same transport once
  the outbox has committed. It never raises and never blocks for more than about a second;
  a failure is counted by the source (the node resends, and the pipeline re-acks).
* ``arrival.settled(stored)`` (optional) tells a source that has no node to resend (a
  LoRaWAN uplink) what became of an arrival the sink took: ``True`` once the agent is done
  with it (its records committed, or the pipeline rejected it: nothing to try again),
  ``False`` if the outbox refused the batch (a full disk): nothing of it was stored and the
  source hands it again later (``gateway.sources.holding``). Called on the agent's thread,
  once per arrival taken; it must be quick and never raise.

Kinds: ``FRAME`` (a node frame), ``LORAWAN`` (a pack from ChirpStack) and ``GAP``: a gap
record of the device's own stream that a source made (``data`` is unused; ``device_id``,
``record`` say what to store; no built-in source makes one). What a source drops itself is
the gateway's drop, not the node's: a source that may drop (the ChirpStack source, past its
``max_held``) has ``store_gaps(mark)``, which the agent calls on its link check with
``Outbox.mark_dropped`` (gateway gap markers: ``gateway.outbox_gaps``,
``gateway.sources.holding``).

Every source has ``start(sink)``, ``stop(timeout_s)`` (joins its threads, bounded),
``counters()`` (a flat ``{name: int}``, e.g. ``{"frames": 12, "link_errors.crc": 1}``) and
``status()`` (``{"connected": bool, "detail": str}``, where ``detail`` says what is
happening and, when something is wrong, what to do). A source on a network link counts
``connects`` and ``connect_failures.tls`` (refused handshakes) so the agent raises the
gateway's ``tls_failure`` alarm for it (``gateway.agent_links``). docs/gateway-sources.md lists each
source's counters for the IoT manager.
"""

import threading
from typing import NamedTuple

FRAME, LORAWAN, GAP = "frame", "lorawan", "gap"


class Arrival(NamedTuple):
    kind: str                 # FRAME (a node frame, COBS/CRC already removed), LORAWAN, GAP
    data: bytes               # the frame, or the LoRaWAN FRMPayload
    source: str               # a label for logs/metrics: "serial:/dev/ttyUSB0",
                              # "site_mqtt", "chirpstack", "i2c:1"
    device_id: str | None = None   # who the transport says sent it (MQTT topic/user), or None
    dev_eui: str | None = None     # LORAWAN only
    dedup_id: str | None = None    # LORAWAN only: ChirpStack deduplicationId
    received_s: float | None = None  # clock.wall_s() if clock.wall_trusted() else None
    reply: object = None      # callable(ack_bytes) -> None: send the ack back on the same
                              # transport (serial: COBS/CRC-framed write; MQTT: publish QoS 1
                              # to civicedge/node/<id>/ack). Never raises, never blocks > 1 s.
    settled: object = None    # callable(stored: bool) -> None, or None (see the docstring)
    record: object = None     # GAP only: the gap record (a dict) to store for device_id


class Counters:
    """Thread-safe named integer counters (the transport thread and the agent's thread both
    count: a reply runs on the agent's)."""

    def __init__(self, *names):
        self._lock = threading.Lock()
        self._values = dict.fromkeys(names, 0)

    def inc(self, name, n=1):
        with self._lock:
            self._values[name] = self._values.get(name, 0) + n

    def set(self, name, value):
        with self._lock:
            self._values[name] = int(value)

    def get(self, name):
        with self._lock:
            return self._values.get(name, 0)

    def snapshot(self):
        with self._lock:
            return dict(self._values)


class Source:
    """Base class: ``name`` (the label in ``Arrival.source``), counters, and ``_emit`` which
    hands an arrival to the sink and counts what happened. Subclasses run their own
    threads and implement ``start``, ``stop`` and ``status``."""

    name = "source"

    def __init__(self, name, *counter_names):
        self.name = name
        self._counters = Counters("arrivals", "overflow", *counter_names)
        self._sink = None

    def start(self, sink):
        """Start the source's thread(s); ``sink(arrival) -> bool`` receives what arrives."""
        raise NotImplementedError

    def stop(self, timeout_s=5.0):
        """Stop and join the thread(s), waiting at most about ``timeout_s`` seconds."""
        raise NotImplementedError

    def counters(self):
        """A flat ``{name: int}`` of everything this source counted."""
        return self._counters.snapshot()

    def status(self):
        """``{"connected": bool, "detail": str}`` for ``civicedge gateway status``."""
        raise NotImplementedError

    def _emit(self, arrival):
        """Hand ``arrival`` to the sink; True if the agent took it. ``overflow`` +1 when the
        agent's queue stayed full; ``sink_errors`` +1 if a sink broke its contract by raising
        (the source keeps running either way)."""
        sink = self._sink
        if sink is None:
            self._counters.inc("overflow")
            return False
        try:
            taken = sink(arrival)
        except Exception:  # the sink never raises by contract; a source must outlive a bug
            self._counters.inc("sink_errors")
            return False
        if taken is False:
            self._counters.inc("overflow")
            return False
        self._counters.inc("arrivals")
        return True


def wall_or_none(clock):
    """``clock.wall_s()`` when the clock says wall time is trusted, else None."""
    try:
        return float(clock.wall_s()) if clock.wall_trusted() else None
    except (OSError, ValueError, TypeError, OverflowError):
        return None


class RetryDelay:
    """A bounded doubling delay for reopening a local device (not a network backoff: a USB
    adapter that reappears should be found within ``max_s``). Pure; the caller waits."""

    def __init__(self, min_s=0.5, max_s=5.0):
        if not 0 < min_s <= max_s:
            raise ValueError("need 0 < min_s <= max_s, got min_s=%r max_s=%r" % (min_s, max_s))
        self.min_s, self.max_s = float(min_s), float(max_s)
        self._next = self.min_s

    def next(self):
        """The delay to wait now (seconds); the following one doubles, up to ``max_s``."""
        d = self._next
        self._next = min(self.max_s, d * 2)
        return d

    def reset(self):
        self._next = self.min_s
