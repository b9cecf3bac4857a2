"""The node's logging loop, to be killed (SIGKILL) at a random moment: a power cut.

    MICROPYPATH=<repo>/simulators/mpy:<repo> micropython tests/mpy/store/powercut_writer.py IMAGE

Mounts the littlefs image at /flash (formatting it only if it is new), boots the node state
and appends records for ever, sending (pending) and acking now and then (half of the time
at every append, as a mains node does). It prints a line only
after the operation has returned, so every printed line is a promise the flash must keep:
    B <boot_epoch> .           boot() returned (the epoch is persisted)
    A <boot_epoch> <seq> .     append returned (the record is in the log)
    K <boot_epoch> <seq> .     ack_through returned (everything up to the key may be trimmed)
Each line is one preformatted string ending in " ." so a line cut short by the kill is
recognisably incomplete (print writes its arguments separately).
"""

import sys

from flashdev import mount_flash

from firmware.app.state import NodeState
from firmware.app.store import RecordLog

MAX_BYTES = 8192
SEGMENT_BYTES = 1024


def main(image):
    mount_flash(image, "/flash", 64)
    state = NodeState("/flash")
    log = RecordLog("/flash", MAX_BYTES, state=state, segment_bytes=SEGMENT_BYTES)
    epoch = state.boot("power_on", log.max_epoch())
    print("B %d ." % epoch)
    n = 0
    while True:
        n += 1
        if n % 5 == 0:  # a wake with two readings and a status record: one write
            recs = [{"t": None, "values": [["co2_ppm", 400 + n % 600, "ok"]]},
                    {"t": None, "values": [["temperature_c", 20.5, "ok"]]},
                    {"t": None, "kind": "status", "values": [["battery_v", 3.7, "ok"]],
                     "counters": {"n": n}}]
            for s in log.append_all(recs):
                print("A %d %d ." % (state.boot_epoch, s))
        else:
            s = log.append({"t": None, "values": [["co2_ppm", 400 + n % 600, "ok"]]})
            print("A %d %d ." % (state.boot_epoch, s))
        mains = n % 40 >= 20  # a mains node's cycles: all sent and acked at once (RAM tail)
        if mains or n % 7 == 0:
            got = log.pending(16 if mains else 4 + n % 5)
            if got:
                e, rec = got[-1]
                if log.ack_through(e, rec["seq"]):
                    print("K %d %d ." % (e, rec["seq"]))
        if n % 11 == 0:
            state.incr("wakes")
            state.save()


main(sys.argv[1])
