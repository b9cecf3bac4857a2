"""The gateway's own alarms standing, as notes of ``civicedge gateway status`` (``gateway.ops``):
``tls_failure`` of the upstream forwarder or an MQTT source (``gateway.agent_links``; the
note names the configuration table to fix) and ``disk_full`` (``gateway.agent_disk``), read from
the state the agent stores with their events (tables ``state``, names ``links`` and
``disk``), and from the live metrics for a ``disk_full`` alarm the full disk did not let the
agent store yet (``civicedge_disk_full_alarm_active``)."""

import json

DISK_LIVE = "civicedge_disk_full_alarm_active"
_TLS = ("ALARM tls_failure: %s keeps refusing TLS: check ca_file%s, the broker's certificate "
        "and the Pi's clock")
# the configuration table of each part the agent watches (gateway.agent_links)
SECTIONS = {"forwarder": "upstream.mqtt", "source.site_mqtt": "sources.site_broker",
            "source.chirpstack": "sources.chirpstack"}
_DISK = ("ALARM disk_full: SQLite found the outbox's disk full%s: free space on %s (meanwhile "
         "the oldest unsent readings are dropped, counted, or not taken)")


def stored_notes(db, outbox_dir, iso):
    """Notes for the alarms standing in the stored state (``db``: a read connection inside
    its snapshot; ``iso``: Unix s -> text). A state that does not parse gets a note too."""
    notes = []
    for name in ("links", "disk"):
        row = db.execute("SELECT json FROM state WHERE name = ?", (name,)).fetchone()
        try:
            active = json.loads(row[0])["active"] if row else {}
            for part in sorted(active):
                if name == "links":
                    where = SECTIONS.get(part)
                    notes.append(_TLS % (part, " in [%s]" % where if where else ""))
                else:
                    since = active[part].get("since")
                    notes.append(_DISK % (" since " + iso(since) if since else "", outbox_dir))
        except (ValueError, KeyError, TypeError, AttributeError):
            notes.append("the stored %s state is not readable" % name)
    return notes


def live_notes(live, notes, outbox_dir):
    """A note for a ``disk_full`` alarm the agent reports live (``live``: series -> value)
    and has not stored yet (none among ``notes``)."""
    if not live or not live.get(DISK_LIVE) or any(n.startswith("ALARM disk_full") for n in notes):
        return []
    return [_DISK % (" (not stored yet)", outbox_dir)]
