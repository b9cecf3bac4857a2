"""Process crash (kill -9) of a writer on the real outbox file, RELIABILITY.md rule 7.

A child Python process opens the outbox and loops: ``put_many`` a batch, then print each key it
returned (so a printed key was COMMITted and could have been acked to a node); now and then it
takes rows, prints them as forwarded, and acks them (the upstream PUBACK). The parent SIGKILLs
it at a random moment, 30 times, reopens the file after each kill and checks: ``PRAGMA
integrity_check`` is ok, every key printed as committed and not printed as forwarded is stored,
nothing was dropped (the bounds are far away), and the outbox's own counters (rows, bytes,
duplicates) agree with the rows. Power loss (unsynced writes lost) is a different fault and is
not simulated here."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

from gateway.outbox import Outbox
from gateway.outbox_policy import LANES, ROW_OVERHEAD_BYTES
from simulators.clock import VirtualClock
from tests.killkit import output_after_kill

KILLS = 30

CHILD = r"""
import sys
from gateway.clock import SystemClock
from gateway.outbox import Outbox, OutboxRecord

path, run = sys.argv[1], int(sys.argv[2])
ob = Outbox(path, 1 << 30, 30 * 86400, SystemClock())
out = sys.stdout
out.write("ready\n")
out.flush()
seq = 0
while True:
    batch = [OutboxRecord("node-%d" % (i % 4), run, seq + i,
                          {"seq": seq + i, "t": None, "values": [["co2_ppm", 400 + i, "ok"]]},
                          "alarm" if i % 17 == 0 else "routine")
             for i in range(40)]
    result = ob.put_many(batch + batch[:3])       # a resent frame's records too
    seq += 40
    out.write("".join("C %s %d %d\n" % key for key in result.new))
    out.flush()
    if seq % 400 == 0:                            # forward: hand out, then PUBACK
        rows = ob.take(150)
        out.write("".join("F %s %d %d\n" % (r.device_id, r.boot_epoch, r.seq) for r in rows))
        out.flush()
        ob.ack([r.row_id for r in rows])
"""


def run_child(path, run, rng):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, path, str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout.readline() == b"ready\n", proc.stderr.read().decode()
    time.sleep(rng.uniform(0.0, 0.25))            # somewhere inside put / commit / ack
    proc.send_signal(signal.SIGKILL)
    out, err = output_after_kill(proc)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    committed, forwarded = set(), set()
    for line in out.decode().split("\n")[:-1]:    # a torn last line has no newline: ignored
        kind, device, epoch, seq = line.split()
        (committed if kind == "C" else forwarded).add((device, int(epoch), int(seq)))
    return committed, forwarded


def test_every_committed_key_survives_kill_9(tmp_path):
    path = str(tmp_path / "outbox.db")
    rng = random.Random(4)
    committed, forwarded = set(), set()
    for run in range(1, KILLS + 1):
        c, f = run_child(path, run, rng)
        committed |= c
        forwarded |= f
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            stored = set(db.execute("SELECT device_id, boot_epoch, seq FROM rows"))
            recount = dict(db.execute(
                "SELECT lane, count(*) FROM rows GROUP BY lane"))
            nbytes = db.execute("SELECT coalesce(sum(length(payload) + 2 * length(device_id)"
                                " + ?), 0) FROM rows", (ROW_OVERHEAD_BYTES,)).fetchone()[0]
        missing = committed - forwarded - stored
        assert not missing, "run %d: committed keys lost: %r" % (run, sorted(missing)[:5])
        ob = Outbox(path, 1 << 30, 30 * 86400, VirtualClock())   # integrity_check on open
        st = ob.stats()
        assert st.rows == {lane: recount.get(lane, 0) for lane in LANES}
        assert st.total_bytes == nbytes
        assert sum(st.dropped.values()) == 0 and ob.gaps() == []
        # each committed put counted its 3 resent records in the same transaction
        puts = {(e, s // 40) for _, e, s in stored | forwarded}
        assert st.duplicates == 3 * len(puts)
        ob.close()
    assert len(committed) > 1000                  # the children did get work done
    assert forwarded                               # and some kills came during forwarding
