"""The fleet's clock file between processes (simulators/fleet/gateway_child.py): the runner
writes the global time while a gateway's process reads it. Every read must be a value the
runner wrote, never half of one update and half of the next (struct writes standard sizes a
byte at a time, and a torn read once ran a gateway's alarm clock hours ahead)."""

import subprocess
import sys

from simulators.fleet.gateway_child import ClockFile, FleetClock
from simulators.mpyrun import REPO

STEP_US = 997_331  # odd-sized steps: every byte of the u64 changes, byte 4 every ~4,300 writes
WRITES = 100_000

WRITER = """
import sys, time
from simulators.fleet.gateway_child import ClockFile
cf = ClockFile(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
g = 0
for _ in range(%d):
    g += %d
    cf.publish(g)
    time.sleep(0)  # as the runner does, between its updates: other work
""" % (WRITES, STEP_US)


def test_a_reader_in_another_process_sees_only_whole_updates(tmp_path):
    path = tmp_path / "clock"
    ClockFile(str(path)).close()  # the file exists before the reader maps it
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout.readline().strip() == "ready"
        clock = FleetClock(str(path), 0.0)
        writer.stdin.write("go\n")
        writer.stdin.flush()
        last, reads, torn, backwards = 0, 0, 0, 0
        while writer.poll() is None and reads < 20_000_000:  # bounded: until the writer ends
            g, off = clock._read()
            reads += 1
            torn += g % STEP_US != 0 or off != 0.0
            backwards += g < last
            last = max(last, g)
        assert writer.wait(timeout=60) == 0
        g, _ = clock._read()
        assert g == WRITES * STEP_US  # the last update, whole
        assert (torn, backwards) == (0, 0), "%d of %d reads torn, %d went backwards" % (torn, reads, backwards)
        assert reads > 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def test_a_clock_jump_moves_only_the_offset(tmp_path):
    path = tmp_path / "clock"
    cf = ClockFile(str(path))
    clock = FleetClock(str(path), 1_000.0)
    cf.publish(5_000_000)
    assert clock.wall_s() == 1_005.0
    cf.jump(-7200.0)
    assert clock._read() == (5_000_000, -7200.0)
    assert clock.wall_s() == 1_005.0 - 7200.0
    assert clock.ticks_ms() == 5_000
    cf.close()
