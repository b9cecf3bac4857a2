"""``python -m simulators.i2c_server``'s arguments: a bad one is a usage error, not a traceback."""

import subprocess
import sys

from simulators.mpyrun import REPO


def run(*args):
    return subprocess.run([sys.executable, "-m", "simulators.i2c_server", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_help_prints_the_usage():
    r = run("--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m simulators.i2c_server")


def test_a_port_that_is_not_a_number_is_a_usage_error():
    r = run("eighty")
    assert r.returncode == 2 and "bad argument" in r.stderr and "'eighty'" in r.stderr
    assert "Traceback" not in r.stderr


def test_devices_that_are_not_json_are_a_usage_error():
    r = run("0", "{not json")
    assert r.returncode == 2 and "bad argument" in r.stderr and "Traceback" not in r.stderr
