"""After a power cut: mount the image WITHOUT formatting, open the state and the log as the
next boot would (the log finishes any interrupted drop or trim), and report, one JSON line
each (parsed by tests/mpy/test_store_powercut.py):
    MOUNT ok | MOUNT FAIL <error>
    STATE {...NodeState.snapshot()...}
    H <epoch> <seq> <kind>             every record held, oldest first (streamed: bounded memory)
    G <first_epoch> <first_seq> <last_epoch> <last_seq> <dropped>   for each gap record held
    STATS {...RecordLog.stats()...}
"""

import json
import sys

import vfs
from flashdev import FileFlash

from firmware.app.state import NodeState
from firmware.app.store import RecordLog

MAX_BYTES = 8192
SEGMENT_BYTES = 1024


def main(image):
    try:
        vfs.mount(vfs.VfsLfs2(FileFlash(image)), "/flash")
    except OSError as e:
        print("MOUNT FAIL", repr(e))
        return
    print("MOUNT ok")
    state = NodeState("/flash")
    print("STATE", json.dumps(state.snapshot()))
    log = RecordLog("/flash", MAX_BYTES, state=state, segment_bytes=SEGMENT_BYTES)
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


main(sys.argv[1])
