"""What the agent stores besides the pipeline's own: the outbox records of an accepted
``Result`` (with the events they raised and the receive time of untimed ones), the record of
a source's ``GAP`` arrival, and telling sources what became of their arrivals. Pure helpers
of ``gateway.agent`` (no I/O)."""

from gateway.outbox import OutboxRecord
from gateway.pipeline import ROUTINE

GAP = "gap"  # Arrival.kind, as gateway.sources defines


def stored_records(res, rx_t):
    """The outbox records ``(device_id, boot_epoch, seq, record, lane)`` (``OutboxRecord``'s
    fields) of an accepted ``Result`` (duplicates are already stored)."""
    out = []
    append = out.append
    for dev, epoch, seq, rec, lane, duplicate, events in res.records:  # StoredRecord's fields
        if duplicate:
            continue
        if events or (rx_t is not None and rec.get("t") is None):
            extra = {"alarms": [e.to_dict() for e in events]} if events else {}
            if rx_t is not None and rec.get("t") is None:
                extra["rx_t"] = rx_t
            rec = dict(rec, **extra)
        append((dev, epoch, seq, rec, lane))
    return out


def gap_record(a, rx_t):
    """The ``OutboxRecord`` of a ``GAP`` arrival: its gap record under ``(device_id,
    first_epoch, seq)``, with ``rx_t`` as any untimed record. Raises ``ValueError`` if it
    is not one."""
    rec = a.record
    ok = isinstance(rec, dict) and rec.get("kind") == GAP and isinstance(a.device_id, str)
    if not ok or not all(type(rec.get(k)) is int and 0 <= rec[k] <= 0xFFFFFFFF
                         for k in ("seq", "first_epoch")):
        raise ValueError("a gap arrival needs a device_id and a gap record, got %r for %r"
                         % (rec, a.device_id))
    if rx_t is not None and rec.get("t") is None:
        rec = dict(rec, rx_t=rx_t)
    return OutboxRecord(a.device_id, rec["first_epoch"], rec["seq"], rec, ROUTINE)


def settle(callbacks, stored):
    """Tell each source what became of its arrivals (``Arrival.settled``); never raises."""
    for fn in callbacks:
        try:
            fn(stored)
        except Exception:  # noqa: BLE001 (settled never raises, by contract; still)
            pass
