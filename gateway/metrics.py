"""The agent's counters and gauges in the Prometheus text format (0.0.4), served on loopback.

Theory of operation (the metrics, what they mean and alerts: docs/gateway-operations.md)
---------------------------------------------------------------------------------------
``render(snapshot)`` (pure) turns the agent's flat snapshot (``Agent.snapshot()``: dotted
names -> numbers) into exposition text. ``RULES`` is the mapping table: for each known key
pattern, the metric name (``civicedge_...``), its type, the labels taken from the key and a
HELP line. Counters end in ``_total``. A family with a reason (``pipeline.auth_failures.
bad_tag``) becomes one metric with a ``reason`` label; per-source, per-lane and per-device
keys get ``source``, ``lane`` and ``device`` labels. A key no rule knows is still exported:
under a name made from the key (``civicedge_<family>_<name>``, invalid characters as ``_``),
typed ``counter`` where its family's contract says its numbers count (``pipeline``,
``agent``, ``alarms``, ``source``, ``forwarder``: ``counters()`` are counts, apart from the
gauges listed in ``_GAUGES``) and ``untyped`` otherwise, so nothing is ever mislabelled as a
counter by guessing. Values that are not numbers (text, None) are left out; nothing in a
snapshot makes ``render`` raise. Label values are escaped as the format requires (``\\``,
``"``, newline), and every series appears once.

``MetricsServer(host, port, snapshot_fn)`` serves ``GET /metrics`` (anything else: 404) from
a ``ThreadingHTTPServer`` on a daemon thread. It refuses a host that is not loopback
(``ValueError``): metrics say which devices exist and when they report, which is for this
machine (scrape it through an SSH tunnel or a TLS proxy). ``port`` 0 picks a free port
(``.port`` says which). A failing ``snapshot_fn`` answers 500 and the server keeps serving.
"""

import http.server
import logging
import math
import re
import socket
import threading

from gateway.security import is_loopback

PREFIX = "civicedge_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
COUNTER, GAUGE, UNTYPED = "counter", "gauge", "untyped"

log = logging.getLogger("civicedge.gateway.metrics")

_ID = r"[a-z0-9_]+"
# (key pattern, metric name without the prefix, type, help). Named groups become labels.
RULES = [
    # -- the pipeline: what arrived and what it was (gateway/pipeline.py) --------------------
    (r"pipeline\.received", "received_total", COUNTER,
     "Inputs (node frames and LoRaWAN uplinks) received from all sources."),
    (r"pipeline\.accepted", "accepted_total", COUNTER, "Inputs that verified and decoded."),
    (r"pipeline\.records", "records_total", COUNTER, "Records carried by accepted inputs."),
    (r"pipeline\.duplicates", "duplicates_total", COUNTER,
     "Records received again that were already stored (resends; stored once)."),
    (r"pipeline\.replays", "replays_total", COUNTER,
     "Frames or packs from an older boot epoch than the device's newest: rejected."),
    (r"pipeline\.auth_failures\.(?P<reason>.+)", "auth_failures_total", COUNTER,
     "Frames that failed authentication, by reason (bad_tag: forged or wrong key)."),
    (r"pipeline\.decode_errors\.(?P<reason>.+)", "decode_errors_total", COUNTER,
     "Authentic inputs that did not decode, by reason: not stored, not acked."),
    (r"pipeline\.records_held\.(?P<reason>.+)", "records_held_total", COUNTER,
     "Records held back for a later frame (outside their frame's range)."),
    (r"pipeline\.duplicate_uplinks", "duplicate_uplinks_total", COUNTER,
     "ChirpStack events seen again (same deduplicationId)."),
    # -- the outbox: the queue to upstream (gateway/outbox.py) --------------------------------
    (r"outbox\.rows\.(?P<lane>%s)" % _ID, "outbox_rows", GAUGE,
     "Queue depth: rows stored and not yet acknowledged upstream, by lane."),
    (r"outbox\.bytes\.(?P<lane>%s)" % _ID, "outbox_bytes", GAUGE,
     "Tracked bytes of the queued rows, by lane."),
    (r"outbox\.total_bytes", "outbox_tracked_bytes", GAUGE, "Tracked bytes of all queued rows."),
    (r"outbox\.max_bytes", "outbox_max_bytes", GAUGE, "The outbox's size bound (bytes)."),
    (r"outbox\.oldest_age_s", "outbox_oldest_unsent_age_seconds", GAUGE,
     "Running time since the oldest unsent row arrived (0 when empty)."),
    (r"outbox\.in_flight", "outbox_in_flight", GAUGE, "Rows sent and awaiting the upstream ack."),
    (r"outbox\.dropped\.(?P<lane>%s)" % _ID, "drops_total", COUNTER,
     "Unsent rows dropped by the outbox's bounds, by lane (each covered by a gap marker)."),
    (r"outbox\.dropped_by_reason\.(?P<reason>%s)" % _ID, "drops_by_reason_total", COUNTER,
     "Unsent rows dropped, by reason: size, age, full (disk full)."),
    (r"outbox\.duplicates", "outbox_duplicates_total", COUNTER,
     "Stores of a key already queued (ignored)."),
    (r"outbox\.disk_full_events", "outbox_disk_full_events_total", COUNTER,
     "Times SQLite reported a full disk while storing."),
    (r"outbox\.gap_markers", "outbox_gap_markers", GAUGE,
     "Gap markers (drops) waiting to be reported upstream."),
    (r"outbox\.file_bytes", "outbox_file_bytes", GAUGE, "Size of the outbox database file."),
    # -- delivered history kept for export (gateway/outbox_history.py) ------------------------
    (r"(?:outbox\.)?history\.rows", "history_rows", GAUGE,
     "Delivered rows kept for the open-data export."),
    (r"(?:outbox\.)?history\.bytes", "history_bytes", GAUGE, "Tracked bytes of the history."),
    (r"(?:outbox\.)?history\.max_bytes", "history_max_bytes", GAUGE,
     "The history's size bound (0: history off)."),
    (r"(?:outbox\.)?history\.max_age_s", "history_max_age_seconds", GAUGE,
     "The history's age bound (0: history off)."),
    (r"(?:outbox\.)?history\.trimmed_(?P<reason>%s)" % _ID, "history_trimmed_total", COUNTER,
     "Delivered rows trimmed from the history (not drops), by reason: size, age, full."),
    (r"(?:outbox\.)?history\.skipped", "history_skipped_total", COUNTER,
     "Delivered rows not kept in history because the disk was full at their ack."),
    (r"(?:outbox\.)?history\.oldest_s", "history_oldest_timestamp_seconds", GAUGE,
     "Time of the oldest reading kept in history (Unix s)."),
    (r"(?:outbox\.)?history\.newest_s", "history_newest_timestamp_seconds", GAUGE,
     "Time of the newest reading kept in history (Unix s)."),
    # -- sources (gateway/sources) --------------------------------------------------------------
    (r"source\.(?P<source>.+)\.connected", "source_connected", GAUGE,
     "1 while the source is connected (port open, broker session up)."),
    (r"source\.(?P<source>.+)\.reconnects", "source_reconnects_total", COUNTER,
     "Times the source connected again after losing its port or broker."),
    (r"source\.(?P<source>.+)\.frames", "source_frames_total", COUNTER,
     "Frames the source received."),
    (r"source\.(?P<source>.+)\.overflow", "source_overflow_total", COUNTER,
     "Arrivals dropped unacked because the agent's queue stayed full (the node resends)."),
    (r"source\.(?P<source>.+)\.link_errors\.(?P<reason>%s)" % _ID, "source_link_errors_total",
     COUNTER, "Serial bytes that did not make a frame, by reason: crc, cobs, oversize."),
    (r"source\.(?P<source>.+)\.connect_failures\.(?P<reason>%s)" % _ID,
     "source_connect_failures_total", COUNTER,
     "Failed connection attempts of a source to its broker, by reason: tls (handshake "
     "refused: wrong CA, expired certificate, clock before NTP), network."),
    (r"source\.(?P<source>.+)\.held", "source_held_total", COUNTER,
     "LoRaWAN uplinks the outbox could not store (disk full), held in memory for another try."),
    (r"source\.(?P<source>.+)\.holding", "source_holding", GAUGE,
     "Uplinks and drops held in memory now, waiting for the outbox to store or mark them."),
    # -- the forwarder (gateway/forward) --------------------------------------------------------
    (r"forwarder\.forwarded", "forwarded_total", COUNTER,
     "Rows confirmed by the upstream (PUBACK or confirmed uplink)."),
    (r"forwarder\.reconnects", "upstream_reconnects_total", COUNTER,
     "Times the forwarder connected again to the upstream."),
    (r"forwarder\.connect_failures\.(?P<reason>%s)" % _ID, "forwarder_connect_failures_total",
     COUNTER, "Failed connection attempts to the upstream broker, by reason: tls (handshake "
     "refused: wrong CA, expired certificate, clock before NTP), network, auth, refused."),
    (r"forwarder\.publish_errors", "upstream_publish_errors_total", COUNTER,
     "Publishes that failed (the rows go again)."),
    (r"forwarder\.puback_timeouts", "upstream_puback_timeouts_total", COUNTER,
     "Connections dropped because a publish's PUBACK did not come within puback_timeout_s."),
    (r"forwarder\.connected", "upstream_connected", GAUGE,
     "1 while the upstream connection is up (MQTT session / LoRaWAN joined)."),
    (r"forwarder\.in_flight_rows", "upstream_in_flight_rows", GAUGE,
     "Rows in publishes awaiting the upstream ack."),
    (r"forwarder\.confirmed_rows", "upstream_confirmed_rows", GAUGE,
     "Rows the upstream confirmed (MQTT: PUBACKed) whose outbox delete has not begun."),
    (r"forwarder\.in_flight", "upstream_in_flight", GAUGE,
     "Publishes (MQTT) or rows (LoRaWAN) awaiting the upstream ack."),
    (r"forwarder\.gaps_forwarded", "gap_markers_forwarded_total", COUNTER,
     "Gap markers (counted drops) reported upstream."),
    # -- devices ---------------------------------------------------------------------------------
    (r"(?:last_seen_s\.(?P<device>[^.]+)|device\.(?P<device_>.+)\.last_seen_s)",
     "device_last_seen_timestamp_seconds", GAUGE,
     "When the device's last accepted input arrived (Unix s)."),
    # -- the agent itself (gateway/agent.py) ----------------------------------------------------
    (r"agent\.queue_len", "agent_queue_length", GAUGE, "Arrivals waiting in the agent's queue."),
    (r"agent\.queue_max", "agent_queue_capacity", GAUGE, "The agent queue's capacity."),
    (r"agent\.uptime_s", "agent_uptime_seconds", GAUGE, "Seconds since the agent started."),
    (r"agent\.wall_trusted", "wall_clock_trusted", GAUGE,
     "1 while the wall clock is trusted (synchronised)."),
    (r"agent\.overflow", "agent_queue_overflow_total", COUNTER,
     "Arrivals refused because the agent's queue stayed full."),
    (r"agent\.store_failures\.(?P<reason>.+)", "store_failures_total", COUNTER,
     "Batches the outbox refused (not acked; nodes resend), by reason."),
    (r"agent\.acks", "acks_sent_total", COUNTER, "Acks sent to nodes (after the commit)."),
    (r"agent\.link_alarms_active", "link_alarms_active", GAUGE,
     "Gateway alarms standing because TLS to a broker keeps failing (tls_failure)."),
    (r"agent\.link_events", "link_alarm_events_total", COUNTER,
     "tls_failure alarm events (raised, cleared) stored by the gateway."),
    (r"agent\.disk_full_alarm_active", "disk_full_alarm_active", GAUGE,
     "1 while the gateway's disk_full alarm stands (SQLite found the outbox's disk full)."),
    (r"agent\.disk_events", "disk_full_alarm_events_total", COUNTER,
     "disk_full alarm events (raised, cleared) stored by the gateway."),
    (r"agent\.disk_events_pending", "disk_full_alarm_events_pending", GAUGE,
     "disk_full alarm events kept in memory until the disk takes them."),
    (r"agent\.gap_records", "source_gap_records_total", COUNTER,
     "Gap records stored that a source made (GAP arrivals)."),
    (r"agent\.source_drops_marked", "source_drops_marked_total", COUNTER,
     "Records of uplinks a source dropped (disk full too long), marked by gateway gap "
     "markers (also in drops_by_reason_total{reason=\"full\"})."),
    (r"agent\.source_gap_failures", "source_gap_failures_total", COUNTER,
     "Tries to mark a source's drops that the outbox refused (retried at the next check)."),
    (r"agent\.rejected", "rejected_total", COUNTER,
     "Inputs rejected by the pipeline (see auth_failures, replays, decode_errors)."),
    (r"alarms\.events", "alarm_events_total", COUNTER,
     "Alarm events (raised, cleared, reports) from the alarm rules."),
    (r"alarms\.active", "alarms_active", GAUGE, "Alarms raised and not cleared."),
    (r"gateway\.boot_epoch", "gateway_boot_epoch", GAUGE, "The gateway stream's boot epoch."),
    (r"gateway\.next_seq", "gateway_next_seq", GAUGE, "The gateway stream's next seq."),
]
_RULES = [(re.compile(p + r"\Z"), name, kind, text) for p, name, kind, text in RULES]
# Counters shown as 0 until the agent first counts them (an absent series breaks alerts).
ALWAYS = {"pipeline.received": 0, "pipeline.accepted": 0, "pipeline.duplicates": 0,
          "pipeline.replays": 0}

# Families whose numbers are counts by contract, and the gauges among them.
_COUNTING = ("pipeline", "agent", "alarms", "source", "forwarder")
_GAUGES = frozenset(("connected", "in_flight", "pending", "boot_epoch", "queue_len",
                     "queue_max", "uptime_s", "wall_trusted", "active"))
# Counter names that take a ".<reason>" (so "a.b" splits as family "a", reason "b").
FAMILIES = frozenset(("link_errors", "ack_errors", "modem_refusals", "dropped", "auth_failures",
                      "decode_errors", "records_held", "store_failures", "connect_failures"))
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_BAD = re.compile(r"[^a-zA-Z0-9_]+")


def metric_name(text):
    """A valid metric name part from ``text`` (runs of other characters become ``_``)."""
    out = _BAD.sub("_", text).strip("_") or "value"
    return "_" + out if out[0].isdigit() else out


def split_part(rest):
    """``(part, counter, reason)`` of ``source.<part>.<counter>[.<reason>]``'s ``rest``; the
    part's name may hold dots (``serial:socket://10.0.0.2:7000``)."""
    bits = rest.split(".")
    if len(bits) >= 3 and bits[-2] in FAMILIES and _NAME.match(bits[-1] or "-"):
        return ".".join(bits[:-2]), bits[-2], bits[-1]
    if len(bits) >= 2:
        return ".".join(bits[:-1]), bits[-1], None
    return rest, "value", None


def _generic(key):
    """``(name, type, labels, help)`` for a key no rule knows."""
    family, _, rest = key.partition(".")
    labels, where = {}, family
    if family in ("source", "device") and rest:
        labels[family], leaf, reason = split_part(rest)
        where += ".<%s>" % family
    else:
        leaf, reason = rest, None
        head, _, tail = rest.rpartition(".")
        if head in FAMILIES or (head and family in _COUNTING and "." not in head):
            leaf, reason = head, tail
    if reason is not None:
        labels["reason"] = reason
    counting = family in _COUNTING and leaf not in _GAUGES
    kind = COUNTER if counting else GAUGE if leaf in _GAUGES else UNTYPED
    name = metric_name("%s_%s" % (family, leaf) if leaf else family)
    if kind == COUNTER and not name.endswith("_total"):
        name += "_total"
    where += "." + leaf if leaf else ""
    return name, kind, labels, "Snapshot key %s%s (not described yet)." % (
        where, ".<reason>" if reason is not None else "")


def classify(key):
    """``(metric name, type, labels, help)`` for snapshot ``key``, known or not."""
    for rx, name, kind, text in _RULES:
        m = rx.match(key)
        if m:
            labels = {k.rstrip("_"): v for k, v in m.groupdict().items() if v is not None}
            return PREFIX + name, kind, labels, text
    name, kind, labels, text = _generic(key)
    return PREFIX + name, kind, labels, text


def escape_label(value):
    """A label value as the text format needs it: ``\\``, ``"`` and newline escaped."""
    return str(value).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def escape_help(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(v):
    """Sample value text; None for what is not a number (left out)."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        return repr(v)
    return None


def render(snapshot):
    """Prometheus text (0.0.4) for ``snapshot`` (``{key: number}``). Never raises for odd
    keys or values: those that cannot be shown are left out."""
    families = {}  # name -> [type, help, {label tuple: value text}]
    snapshot = dict(ALWAYS, **{k: v for k, v in dict(snapshot).items() if isinstance(k, str)})
    for key in sorted(snapshot):
        value = format_value(snapshot[key])
        if value is None:
            continue
        name, kind, labels, text = classify(key)
        fam = families.setdefault(name, [kind, text, {}])
        if fam[0] != kind:  # two keys made one name with two types: keep the first
            continue
        fam[2].setdefault(tuple(sorted(labels.items())), value)
    out = []
    for name in sorted(families):
        kind, text, samples = families[name]
        out.append("# HELP %s %s" % (name, escape_help(text)))
        out.append("# TYPE %s %s" % (name, kind))
        for labels, value in sorted(samples.items()):
            body = ",".join('%s="%s"' % (k, escape_label(v)) for k, v in labels)
            out.append("%s%s %s" % (name, "{%s}" % body if body else "", value))
    return "\n".join(out) + "\n" if out else ""


def flatten(prefix, obj):
    """A flat ``{prefix.key[.sub]: value}`` of a dataclass or dict (nested dicts dotted), to
    feed a stats object into a snapshot: ``flatten("outbox.history", ob.history_stats())``."""
    if hasattr(obj, "__dataclass_fields__"):
        obj = {k: getattr(obj, k) for k in obj.__dataclass_fields__}
    out = {}
    for k, v in obj.items():
        if isinstance(v, dict) or hasattr(v, "__dataclass_fields__"):
            out.update(flatten("%s.%s" % (prefix, k), v))
        else:
            out["%s.%s" % (prefix, k)] = v
    return out


# -- the HTTP endpoint -----------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "civicedge-metrics"
    sys_version = ""
    timeout = 10  # s: a stalled client never holds a thread for long

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.split("?", 1)[0] != "/metrics":
            self._send(404, b"not found: metrics are at /metrics\n", "text/plain; charset=utf-8")
            return
        try:
            body = render(self.server.snapshot_fn()).encode("utf-8")
        except Exception as e:  # noqa: BLE001 (a failing snapshot must not stop the server)
            log.error("metrics: snapshot failed: %s: %s", type(e).__name__, e)
            self._send(500, b"snapshot failed; see the agent's log\n", "text/plain; charset=utf-8")
            return
        self._send(200, body, CONTENT_TYPE)

    def _send(self, status, body, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # scrapes every 15 s would flood the journal
        log.debug("metrics: " + fmt, *args)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MetricsServer:
    """``GET /metrics`` on ``host``:``port`` (loopback only; port 0: a free one), rendering
    ``snapshot_fn()`` at each scrape. Starts at construction on a daemon thread; ``stop()``
    closes it. Raises ``ValueError`` for a host that is not loopback or a bad port, and
    ``OSError`` if the port cannot be bound (e.g. in use)."""

    def __init__(self, host, port, snapshot_fn):
        if not isinstance(host, str) or not is_loopback(host.strip("[]")):
            raise ValueError("metrics host %r is not loopback: metrics listen on 127.0.0.1 or "
                             "::1 only (scrape through an SSH tunnel or a TLS proxy)" % (host,))
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError("metrics port must be an int in 0..65535, got %r" % (port,))
        host = host.strip("[]")
        cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6}) \
            if ":" in host else _Server
        self._httpd = cls((host, port), _Handler)
        self._httpd.snapshot_fn = snapshot_fn
        self.host, self.port = host, self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics",
                                        kwargs={"poll_interval": 0.5}, daemon=True)
        self._thread.start()

    @property
    def url(self):
        return url(self.host, self.port)

    def stop(self, timeout_s=5.0):
        """Stop serving and close the socket (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout_s)
        self._httpd.server_close()


def url(host, port):
    """``http://host:port/metrics`` (IPv6 in brackets)."""
    host = host.strip("[]")
    return "http://%s:%d/metrics" % ("[%s]" % host if ":" in host else host, port)
