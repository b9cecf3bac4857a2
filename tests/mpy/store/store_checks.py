"""The flash log and node state under the MicroPython unix port, on a littlefs image.

    MICROPYPATH=<repo>/simulators/mpy:<repo> micropython tests/mpy/store/store_checks.py IMAGE_DIR

Each check gets its own image in IMAGE_DIR, mounted at /flash through a ``FileFlash`` that
counts what littlefs programs and erases. Output, one line per result (parsed by
tests/mpy/test_store_mpy.py):
    CHECK <name> PASS <json>      (json: what the check measured)
    CHECK <name> FAIL <exception repr>, then "| "-prefixed traceback lines
    DONE
"""

import gc
import io
import json
import os
import sys
import time

import vfs
from flashdev import BLOCK_SIZE, FileFlash

from firmware.app.state import SEQ_BLOCK, NodeState
from firmware.app.store import RecordLog

ROOT = "/flash"


class CountingFlash(FileFlash):
    """FileFlash that counts bytes programmed and blocks erased (what wears the flash).

    No process is killed in these checks, so a write skips FileFlash's flush (on the unix
    port a file flush is an fsync: 16,000 of them made this script I/O-bound)."""

    def __init__(self, path, block_count):
        FileFlash.__init__(self, path, block_count)
        self.reset()

    def reset(self):
        self.programmed = 0
        self.erases = 0
        self.reads = 0
        self.writes = 0

    def readblocks(self, block, buf, offset=0):
        self.reads += 1
        FileFlash.readblocks(self, block, buf, offset)

    def writeblocks(self, block, buf, offset=None):
        self.writes += 1
        self.programmed += len(buf)
        self._f.seek(block * self.block_size + (offset or 0))
        self._f.write(buf)

    def ioctl(self, op, arg):
        if op == 6:
            self.erases += 1
            self._f.seek(arg * self.block_size)
            self._f.write(self._erased)  # made once by FileFlash: no 4 KB allocation per erase
            return 0
        return FileFlash.ioctl(self, op, arg)


def make_image(path, block_count):
    """Erased flash, written a block at a time (FileFlash pads a short image in one allocation
    of the whole missing size, which a 128 KB heap cannot hold for a 1 MB image)."""
    blank = b"\xff" * BLOCK_SIZE
    with open(path, "wb") as f:
        for _ in range(block_count):
            f.write(blank)


def mount(image_dir, name, block_count=256):
    try:
        vfs.umount(ROOT)
    except OSError:
        pass
    path = image_dir + "/" + name + ".img"
    make_image(path, block_count)
    dev = CountingFlash(path, block_count)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), ROOT)
    dev.reset()
    return dev


def reading(i):
    return {"t": None, "values": [["co2_ppm", 400 + i % 100, "ok"], ["temperature_c", 21.5, "ok"],
                                  ["rh_percent", 45.2, "ok"]]}


def open_node(max_bytes, boot=True, segment_bytes=None):
    st = NodeState(ROOT)
    log = RecordLog(ROOT, max_bytes, state=st, segment_bytes=segment_bytes)
    if boot:
        st.boot("deepsleep", log.max_epoch())
    return st, log


def keys(pairs):
    return [(e, r["seq"]) for e, r in pairs]


def check_append_ack_trim_and_reopen(image_dir):
    mount(image_dir, "basic")
    st, log = open_node(16384)
    seqs = [log.append(reading(i)) for i in range(40)]
    assert seqs == list(range(40)), seqs
    got = log.pending(10)
    assert keys(got) == [(1, i) for i in range(10)], keys(got)
    assert got[3][1]["values"][0] == ["co2_ppm", 403, "ok"], got[3]
    assert log.ack_through(1, 9) == 10
    assert log.ack_through(2, 0) == 0 and log.stats()["acks_rejected"] == 1
    held = log.pending(100, mark_sent=False)
    st, log = open_node(16384)  # a new boot: objects gone, flash kept
    assert log.pending(100, mark_sent=False) == held
    assert st.boot_epoch == 2 and log.append(reading(0)) == 0
    log.pending(100)
    assert log.ack_through(2, 0) == 31
    assert log.stats()["bytes"] == 0 and log.stats()["pending"] == 0
    return {"pending_after": log.stats()["pending"]}


def check_more_than_the_bound(image_dir):
    dev = mount(image_dir, "bound")
    bound = 16384
    st, log = open_node(bound)
    n = 0
    for wake in range(30):  # a deep-sleep node with its link down: a new epoch each wake
        for i in range(20):
            log.append(reading(n))
            n += 1
            s = log.stats()
            assert s["bytes"] <= bound, s
        st, log = open_node(bound)
    # stream what is held in batches, as a sender does: bounded memory
    gaps = []
    n_data = n_held = 0
    last = None
    while True:
        batch = log.pending(20, after=last, mark_sent=False)
        if not batch:
            break
        for e, r in batch:
            assert last is None or (e, r["seq"]) > last, (last, e, r["seq"])
            last = (e, r["seq"])
            n_held += 1
            if r.get("kind") == "gap":
                gaps.append(r)
            else:
                n_data += 1
        batch = None
    s = log.stats()
    merged = s["gaps"] - len(gaps)  # gap records dropped in turn: their keys are lost too
    assert gaps and s["dropped"] == n - n_data + merged == sum(g["dropped"] for g in gaps), (s, n_data)
    assert min((g["first_epoch"], g["first_seq"]) for g in gaps) == (1, 0)
    assert s["pending"] == n_held
    fs = os.statvfs(ROOT)
    used_blocks = fs[2] - fs[3]
    # each segment file takes a whole block (or two, mid-copy); then the root and log
    # directories' metadata pairs and the state: a handful more
    segments_max = bound // s["segment_bytes"] + 1
    assert used_blocks <= segments_max + 8, (used_blocks, segments_max)
    sent = None
    while True:  # send it all in batches (each marked sent), then one ack for everything
        batch = log.pending(20, after=sent)
        if not batch:
            break
        sent = (batch[-1][0], batch[-1][1]["seq"])
        batch = None
    assert sent == last and log.ack_through(*last) == n_held and log.stats()["bytes"] == 0
    return {"appended": n, "held": n_data, "dropped": s["dropped"], "gap_records": len(gaps),
            "merged": merged,
            "fs_blocks_used": used_blocks, "bytes": s["bytes"]}


def check_seqs_unique_across_boots_and_resumes(image_dir):
    mount(image_dir, "seqs")
    last = None  # keys handed out must strictly increase over time: then none repeats
    count = 0
    for boot in range(8):
        st = NodeState(ROOT)  # the objects of the previous "boot" are gone, as after a cut
        if boot % 3 != 1:  # every third round resumes without boot()
            st.boot("power_on")
        for n in (1, 2, SEQ_BLOCK + 3, 1):
            first = st.take_seqs(n)
            assert last is None or (st.boot_epoch, first) > last, (last, st.boot_epoch, first)
            last = (st.boot_epoch, first + n - 1)
            count += n
        st.incr("wakes")
        st.save()
    st = NodeState(ROOT)
    assert st.counter("wakes") == 8 and st.boot_count == 5 and st.boot_epoch == 5, st.snapshot()
    return {"keys": count, "last": list(last)}


def measure_wakes(dev, wakes, link_up, boot_each_wake, records_per_wake=1, max_bytes=65536):
    dev.reset()
    st, log = open_node(max_bytes)
    for w in range(wakes):
        if boot_each_wake and w:
            st, log = open_node(max_bytes)
        log.append_all([reading(w)] * records_per_wake)
        if link_up:
            got = log.pending(records_per_wake)
            log.ack_through(*keys(got)[-1])
    return {"programmed_per_wake": dev.programmed // wakes, "erases_per_wake": dev.erases / wakes,
            "programmed_per_reading": dev.programmed // (wakes * records_per_wake),
            "erases_per_reading": dev.erases / (wakes * records_per_wake)}


def check_write_amplification(image_dir):
    entry = 15 + len(json.dumps(reading(0), separators=(",", ":")))
    out = {"entry_bytes": entry}
    out["deepsleep_link_up"] = measure_wakes(mount(image_dir, "w1"), 150, True, True)
    out["deepsleep_link_down"] = measure_wakes(mount(image_dir, "w2"), 150, False, True)
    out["mains_link_up"] = measure_wakes(mount(image_dir, "w3"), 150, True, False)
    out["mains_link_down"] = measure_wakes(mount(image_dir, "w4"), 150, False, False)
    out["deepsleep_3_per_wake_link_up"] = measure_wakes(mount(image_dir, "w5"), 100, True, True, 3)
    dev = mount(image_dir, "w6")
    st = NodeState(ROOT)
    st.boot("power_on")
    dev.reset()
    for i in range(200):
        st.boot("deepsleep")
    out["state_save"] = {"programmed": dev.programmed // 200, "erases": dev.erases / 200}
    dev.reset()
    for i in range(200):
        st.incr("i2c_errors")
        st.save()
    out["counters_save"] = {"programmed": dev.programmed // 200, "erases": dev.erases / 200}
    for k in out:
        if k.endswith("link_up") or k.endswith("link_down"):
            assert out[k]["erases_per_wake"] < 3, out
    return out


def check_ram_tail_per_cycle(image_dir):
    """A mains node's cycles (append, send, ack; some acks partial, some cycles offline):
    ``pending`` after an append reads no flash block (the RAM tail), and after every ack a
    reopen (a power cut right after it: objects gone, flash kept) finds the same records."""
    dev = mount(image_dir, "tail")
    st, log = open_node(65536)
    reads = {"pending": 0, "ack": 0}
    cycles = 60
    clean = True  # everything before this cycle's write is acked
    for w in range(cycles):
        log.append_all([reading(w)] if w % 3 else [reading(w), reading(w + 1000)])
        if w % 10 == 9:
            clean = False
            continue  # link down this cycle: the next pending spans two writes (files read)
        r0 = dev.reads
        got = log.pending(16)
        if clean:
            assert dev.reads == r0, (w, dev.reads - r0)  # served from RAM
        reads["pending"] += dev.reads - r0
        upto = keys(got)[-1] if w % 4 else keys(got)[0]  # every 4th ack is partial
        clean = upto == keys(got)[-1] and len(got) < 16
        r0 = dev.reads
        log.ack_through(*upto)
        reads["ack"] += dev.reads - r0
        held = log.pending(100, mark_sent=False)
        st, log = open_node(65536, boot=False)  # the cut: a new process resumes
        assert log.pending(100, mark_sent=False) == held, (w, keys(held))
    st, log = open_node(65536)
    assert log.append(reading(0)) == 0 and st.boot_epoch == 2
    return {"block_reads_per_cycle": dict((k, reads[k] / cycles) for k in reads)}


def check_spent_segment_per_cycle(image_dir):
    """A mains node's cycles with the link up: the ack leaves the active segment spent and the
    next write replaces it, so one segment file (the same one) stays on flash, holding the last
    cycle's records; a reboot after the last ack sends nothing again and writes into the same
    file. Measures what a cycle programs, erases and how many block writes it makes."""
    dev = mount(image_dir, "spent")
    st, log = open_node(65536)
    cycles = 60
    files = None
    dev.reset()
    for w in range(cycles):
        seq = log.append_all([reading(w)])[0]
        got = log.pending(16)
        assert keys(got) == [(st.boot_epoch, seq)], (w, keys(got))
        assert log.ack_through(*keys(got)[-1]) == 1
        assert log.stats()["bytes"] == 0 and log.stats()["segments"] == 0
        segs = [n for n in os.listdir(ROOT + "/log") if n.endswith(".seg")]
        assert files is None or segs == files, (w, segs, files)
        files = segs
    out = {"programmed_per_cycle": dev.programmed // cycles, "erases_per_cycle": dev.erases / cycles,
           "block_writes_per_cycle": dev.writes / cycles}
    st, log = open_node(65536)  # a reboot keeps the spent segment; nothing is sent again
    assert log.pending(16) == [] and log.stats()["acked"] == [1, cycles - 1]
    assert log.append(reading(0)) == 0 and keys(log.pending(16)) == [(2, 0)]
    assert [n for n in os.listdir(ROOT + "/log") if n.endswith(".seg")] == files
    return out


def main(image_dir):
    for name in ("check_append_ack_trim_and_reopen", "check_more_than_the_bound",
                 "check_seqs_unique_across_boots_and_resumes", "check_write_amplification",
                 "check_ram_tail_per_cycle", "check_spent_segment_per_cycle"):
        gc.collect()
        t0 = time.ticks_ms()
        try:
            result = globals()[name](image_dir)
            result["elapsed_ms"] = time.ticks_diff(time.ticks_ms(), t0)  # information only
            print("CHECK", name, "PASS", json.dumps(result))
        except Exception as e:  # report every failure, keep going
            print("CHECK", name, "FAIL", repr(e))
            tb = io.StringIO()
            sys.print_exception(e, tb)
            for line in tb.getvalue().splitlines():
                print("|", line)
    print("DONE")


main(sys.argv[1])
