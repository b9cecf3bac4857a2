"""What a node's flash image holds, read the way its next boot reads it: mount the littlefs
image (never formatting), open the node's state and its record log with the firmware's own
classes (``firmware/app/state.py``, ``firmware/app/store.py``) in the MicroPython unix port,
and list every record still held. For tests after a power cut and for the fleet runner's
accounting at the end of a run.
"""

import json

from simulators.mpyrun import run_micropython


# Run by the unix port after a power cut: mounts the image WITHOUT formatting and opens the
# state and the log as the node's next boot does (with the node's own log bound), reporting
#   MOUNT ok | MOUNT FAIL <error>
#   STATE {...NodeState.snapshot()...}
#   H <epoch> <seq> <kind>                                  every record held, oldest first
#   G <first_epoch> <first_seq> <last_epoch> <last_seq> <n> every gap record held
#   STATS {...RecordLog.stats()...}
#   CONFIG <sha256 hex of config.json> | CONFIG MISSING
_INSPECT = """
import json, vfs, hashlib, binascii
from flashdev import FileFlash
try:
    vfs.mount(vfs.VfsLfs2(FileFlash(%(image)r)), "/flash")
except OSError as e:
    print("MOUNT FAIL", repr(e))
    raise SystemExit
print("MOUNT ok")
try:
    with open("/flash/config.json", "rb") as f:
        print("CONFIG", binascii.hexlify(hashlib.sha256(f.read()).digest()).decode())
except OSError:
    print("CONFIG MISSING")
from firmware.app.state import NodeState
from firmware.app.store import RecordLog
state = NodeState("/flash")
print("STATE", json.dumps(state.snapshot()))
log = RecordLog("/flash", %(max_bytes)d, state=state, segment_bytes=%(segment_bytes)r)
after = None
while True:
    batch = log.pending(16, after=after, mark_sent=False)
    if not batch:
        break
    for e, r in batch:
        print("H", e, r["seq"], r.get("kind") or "reading")
        if r.get("kind") == "gap":
            print("G", r["first_epoch"], r["first_seq"], r["last_epoch"], r["last_seq"], r["dropped"])
    after = (batch[-1][0], batch[-1][1]["seq"])
    batch = None
print("STATS", json.dumps(log.stats()))
"""


def inspect_image(image, cfg):
    """What the node's next boot would find on ``image`` (``cfg``: the node's config.json as a dict) (see ``_INSPECT``), as a dict:
    ``mount`` ("ok" or the error), ``config_sha256``, ``state``, ``stats``, ``held``
    [(epoch, seq, kind)], ``gaps`` [((first_epoch, first_seq), (last_epoch, last_seq), n)],
    ``error`` (stderr when the inspection itself failed). Opening the log finishes an
    interrupted drop or trim, exactly as the next boot would."""
    code = _INSPECT % {"image": str(image), "max_bytes": cfg["log"]["max_bytes"],
                       "segment_bytes": cfg["log"]["segment_bytes"]}
    rc, out, err = run_micropython(["-c", code], sim=False, timeout_s=60, heapsize="256K")
    report = {"mount": None, "config_sha256": None, "state": None, "stats": None, "held": [], "gaps": [],
              "error": err if rc != 0 else None}
    for line in out.splitlines():
        head, _, rest = line.partition(" ")
        if head == "MOUNT":
            report["mount"] = rest
        elif head == "CONFIG":
            report["config_sha256"] = None if rest == "MISSING" else rest
        elif head == "STATE":
            report["state"] = json.loads(rest)
        elif head == "STATS":
            report["stats"] = json.loads(rest)
        elif head == "H":
            e, s, k = rest.split()
            report["held"].append((int(e), int(s), k))
        elif head == "G":
            fe, fs, le, ls, n = (int(x) for x in rest.split())
            report["gaps"].append(((fe, fs), (le, ls), n))
    return report


def held_gap_records(device_id, report):
    """The gap records an ``inspect_image`` report holds, as the gateway would publish them
    (``reason`` "node_log", ``key`` the gap record's own ``[device, epoch, seq]``), so an
    account counts what they describe as dropped, not lost. ``report["gaps"]`` lists them in
    the order of the ``held`` entries of kind "gap"."""
    keys = [(e, s) for e, s, kind in report["held"] if kind == "gap"]
    return [{"device": device_id, "reason": "node_log", "key": [device_id, e, s],
             "first_epoch": lo[0], "first_seq": lo[1], "last_epoch": hi[0], "last_seq": hi[1],
             "dropped": n} for (e, s), (lo, hi, n) in zip(keys, report["gaps"])]
