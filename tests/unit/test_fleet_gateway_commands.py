"""``GatewayProcess.command``: one line out, one line back, over a real child's pipes. An
answer that comes after its command gave up waiting is not taken for the next command's;
a child that exits answers None. (The child here is a small echo script: the real one,
``gateway_child``, answers the same way, one JSON line a command; the fleet's e2e tests
drive it.)"""

import json
import subprocess
import sys
import textwrap
import time

import pytest

from simulators.fleet.gateways import GatewayProcess

CHILD = textwrap.dedent("""
    import json, sys, time
    for line in sys.stdin:
        cmd = line.strip()
        if cmd.startswith("slow"):
            time.sleep(float(cmd.split()[1]))
        if cmd == "exit":
            break
        sys.stdout.write(json.dumps({"answer": cmd}) + "\\n")
        sys.stdout.flush()
""")


@pytest.fixture
def gp():
    """A ``GatewayProcess`` whose child is the echo script above; killed after the test."""
    g = GatewayProcess(spec=None, config_path=None, clock_path=None, start_wall_s=0, workdir=".")
    g.proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, bufsize=0)
    yield g
    g.proc.kill()
    g.proc.wait()


def test_each_command_gets_its_own_answer_even_after_one_timed_out(gp):
    assert gp.command("first") == {"answer": "first"}
    t0 = time.monotonic()
    assert gp.command("slow 0.5", timeout_s=0.1) is None  # gave up: its answer comes later
    assert time.monotonic() - t0 < 0.4
    time.sleep(0.6)  # the late answer is in the pipe before the next command's
    assert gp.command("next", timeout_s=5) == {"answer": "next"}  # not "slow 0.5"
    assert gp.command("again") == {"answer": "again"}


def test_a_child_that_exits_answers_none_at_once(gp):
    t0 = time.monotonic()
    assert gp.command("exit", timeout_s=10) is None
    assert time.monotonic() - t0 < 5
    gp.proc.wait(5)
    assert gp.command("after") is None  # not alive: nothing is sent


def test_answers_that_arrive_together_are_read_line_by_line(gp):
    gp.proc.stdin.write(b"a\nb\n")  # two commands at once: both answers may come in one read
    assert json.loads(gp._read(5)) == {"answer": "a"}
    assert json.loads(gp._read(5)) == {"answer": "b"}
