"""The pipeline's records and results (``StoredRecord``, ``Result``), the outbox lanes, and
the checks on decoded records that ``gateway.pipeline.Ingest`` relies on."""

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from protocol import quality

ALARM, ROUTINE = "alarm", "routine"
_KINDS = ("reading", "status", "gap")
_HEX = "0123456789abcdef"


class StoredRecord(NamedTuple):  # one per record taken in: a tuple is the cheapest to build
    """One record to insert in the outbox under ``key``; ``record`` is the decoded dict
    (``seq``, ``t``, ``values``...), ``lane`` ``alarm`` if it raised or cleared an alarm,
    ``events`` the ``AlarmEvent``s it raised, cleared or reported."""

    device_id: str
    boot_epoch: int
    seq: int
    record: dict
    lane: str = ROUTINE
    duplicate: bool = False
    events: list = ()

    @property
    def key(self):
        return (self.device_id, self.boot_epoch, self.seq)

    @property
    def kind(self):
        return self.record.get("kind", "reading")


@dataclass(slots=True)
class Result:
    """What one input produced. ``ack``: bytes to send after the commit (frames only)."""

    source: str
    accepted: bool = False
    device_id: str = None
    reason: str = None
    detail: str = ""
    records: list = field(default_factory=list)
    events: list = field(default_factory=list)
    counters: dict = field(default_factory=dict)
    ack: bytes = None
    boot_epoch: int = None
    first_seq: int = None
    seq_through: int = None


def normalise_dev_eui(dev_eui):
    """A devEUI as 16 lowercase hex digits, or None if it is not one."""
    if not isinstance(dev_eui, str):
        return None
    s = dev_eui.strip().lower().replace("-", "").replace(":", "")
    return s if len(s) == 16 and all(c in _HEX for c in s) else None


def _copy_state(st):
    """``copy.deepcopy`` of one device's replay state (or None), at a fraction of its cost."""
    return None if st is None else {"e": st["e"], "r": [[a, b] for a, b in st["r"]]}


def _check_values(records):
    """The first thing wrong with decoded records, or None (the decoders already refuse all
    of it; checked again because the outbox and the alarms rely on it)."""
    isfinite, flags, failed, kinds = math.isfinite, quality.FLAGS, quality.SENSOR_FAILED, _KINDS
    for rec in records:
        seq, t = rec.get("seq"), rec.get("t")
        if type(seq) is not int or not 0 <= seq <= 0xFFFFFFFF:
            return "seq"
        if t is not None and ((type(t) is not int and type(t) is not float) or not isfinite(t)):
            return "time"
        if rec.get("kind", "reading") not in kinds:
            return "kind"
        for item in rec.get("values", ()):
            kind = type(item)
            if (kind is not list and kind is not tuple) or len(item) != 3:
                return "value"
            _, v, flag = item
            if flag not in flags:
                return "flag"
            kind = type(v)
            if kind is float:
                if not isfinite(v):
                    return "value"
            elif v is None:
                if flag != failed:
                    return "value"
            elif kind is not int and kind is not str:
                return "value"
    return None
