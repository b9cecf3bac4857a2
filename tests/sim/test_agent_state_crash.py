"""Rows and state commit together: a writer killed with SIGKILL at random moments.

A child process resumes from the stored state (``through``: the last seq it stored), then
loops: ``put_many`` the next 25 records with ``state={"through": last seq}``, then prints the
seq (so a printed seq was COMMITted). The parent kills it at a random moment, reopens the
file and checks that the state and the rows agree exactly (rows 0..through, no more, no
fewer) and that everything printed is there: the agent relies on this to resume its replay
and alarm state after a crash."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

from gateway.outbox import Outbox
from simulators.clock import VirtualClock
from tests.killkit import output_after_kill

KILLS = 10

CHILD = r"""
import sys
from gateway.clock import SystemClock
from gateway.outbox import Outbox, OutboxRecord

ob = Outbox(sys.argv[1], 1 << 30, 30 * 86400, SystemClock())
seq = ob.load_state("through", -1) + 1
sys.stdout.write("ready\n")
sys.stdout.flush()
while True:
    batch = [OutboxRecord("node", 1, s, {"seq": s, "values": [["co2_ppm", s, "ok"]]})
             for s in range(seq, seq + 25)]
    ob.put_many(batch, state={"through": seq + 24, "pad": "p" * (seq % 300)})
    seq += 25
    sys.stdout.write("C %d\n" % (seq - 1))
    sys.stdout.flush()
"""


def test_state_and_rows_agree_after_every_kill(tmp_path):
    path = str(tmp_path / "outbox.sqlite3")
    rng = random.Random(4)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    printed = -1
    for _ in range(KILLS):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, path], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read().decode()
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        out, _ = output_after_kill(proc)
        lines = [ln for ln in out.decode().splitlines() if ln.startswith("C ")]
        if lines:
            printed = int(lines[-1].split()[1])
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seqs = [s for (s,) in db.execute("SELECT seq FROM rows ORDER BY seq")]
        db.close()
        box = Outbox(path, 1 << 30, 30 * 86400, VirtualClock())
        through = box.load_state("through", -1)
        box.close()
        assert through >= printed  # everything reported committed is there
        assert seqs == list(range(through + 1))  # ...and the state names exactly the rows
    assert printed > 0  # the children did write between kills
