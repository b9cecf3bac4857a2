"""What a deep-sleep wake costs the board runner, checked for sameness: with ``--code-rom`` the
board compiles ``boot.py`` and ``main.py`` once per power-on and runs the same code at every
wake (the image holds the flash's code as it was at power-on), and a file that does not
compile is still tried, and reported, at every boot; ``--flash-cache`` serves littlefs's reads
of recent blocks from the heap, the firmware reading and writing the same files as without;
``flashdev.mount_image`` makes a new image erased flash of the size asked and never formats
one that does not mount."""

import json

import pytest

from simulators.i2c_server import SimServer
from simulators.mpyrun import SHIM, run_micropython

BOARD_PY = str(SHIM / "board.py")

# boot.py counts boots in RTC memory (kept through deep sleep, as on the chip); main.py reports
# the count and what a wake resets (a module's state, the namespace), then deep-sleeps.
FIRMWARE = {
    "boot.py": """
import machine
rtc = machine.RTC()
booted = int(rtc.memory() or b"0") + 1
rtc.memory(str(booted).encode())
""",
    "main.py": """
import json, machine, sys
import state
state.calls += 1
print("APP " + json.dumps({"booted": booted, "calls": state.calls, "main": __name__,
                           "cause": machine.reset_cause(), "loaded": "state" in sys.modules}))
machine.deepsleep(60000)
""",
    "lib/state.py": "calls = 0\n",
}


def _board(tmp_path, name, firmware, *options, wakes=3):
    """Run ``firmware`` (``{path: text}``) for ``wakes`` deep-sleep wakes; returns the APP
    records, the number of tracebacks printed and the BOARD summary."""
    fw = tmp_path / ("fw-" + name)
    for rel, text in firmware.items():
        (fw / rel).parent.mkdir(parents=True, exist_ok=True)
        (fw / rel).write_text(text)
    args = [BOARD_PY, "--flash", str(tmp_path / (name + ".img")), "--wakes", str(wakes), "--install", str(fw)]
    with SimServer() as server:
        rc, out, err = run_micropython(args + list(options), server=server, heapsize="300K", timeout_s=120)
    assert rc == 0, out[-2000:] + err[-2000:]
    apps = [json.loads(line[4:]) for line in out.splitlines() if line.startswith("APP ")]
    summary = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("BOARD ")][0]
    return apps, (out + err).count("Traceback"), summary


def test_a_wake_runs_boot_and_main_again_from_the_code_compiled_at_power_on(tmp_path):
    plain, plain_errors, b1 = _board(tmp_path, "plain", FIRMWARE)
    fast, fast_errors, b2 = _board(tmp_path, "fast", FIRMWARE, "--flash-read", "1024", "--code-rom")
    # every boot ran boot.py then main.py in one fresh __main__ namespace, with its modules
    # imported again (state.calls starts at 0), and RTC memory kept the count
    assert [a["booted"] for a in plain] == [1, 2, 3, 4]
    assert {a["calls"] for a in plain} == {1} and {a["main"] for a in plain} == {"__main__"}
    assert plain == fast and plain_errors == fast_errors == 0
    assert b1["boots"] == b2["boots"] == 4 and b1["virtual_s"] == b2["virtual_s"] and b1["resets"] == b2["resets"]


# Every boot appends to a file and rewrites another: littlefs reads, programs and erases
# (its metadata pairs compact) at every wake.
WRITER = dict(FIRMWARE, **{"main.py": """
import json, machine
with open("log", "a") as f:
    f.write("boot %d\\n" % booted)
with open("last", "w") as f:
    f.write(str(booted) * 40)
with open("log") as f:
    lines = f.read().split("\\n")
print("APP " + json.dumps({"booted": booted, "lines": len(lines), "last": lines[-2]}))
machine.deepsleep(60000)
"""})


@pytest.mark.parametrize("kept", ["1", "4"])
def test_flash_cache_reads_see_every_write_and_the_files_come_out_the_same(tmp_path, kept):
    plain, plain_errors, b1 = _board(tmp_path, "plain", WRITER, "--flash-read", "1024", wakes=12)
    fast, fast_errors, b2 = _board(tmp_path, "fast", WRITER, "--flash-read", "1024", "--flash-cache", kept, wakes=12)
    assert [a["booted"] for a in plain] == list(range(1, 14)) and plain[-1]["last"] == "boot 13"
    assert plain == fast and plain_errors == fast_errors == 0
    # every read of a block written or erased since it was kept saw the new bytes (the log
    # read back at each boot), and the images hold the same files (not the same bytes: littlefs
    # stamps each file with the port's real time)
    assert _files(tmp_path / "plain.img") == _files(tmp_path / "fast.img")
    assert b1["virtual_s"] == b2["virtual_s"]


DUMP = """
import json, os, flashdev
flashdev.mount_image(%r, 512, 32, "/flash")
print(json.dumps({name: open("/flash/" + name).read() for name, kind, *_ in os.ilistdir("/flash") if kind == 0x8000}))
"""


def _files(image):
    """``{name: text}`` of the files at the top of the littlefs ``image``."""
    rc, out, err = run_micropython(["-c", DUMP % str(image)], sim=False, heapsize="200K")
    assert rc == 0, err
    return json.loads(out)


def test_a_boot_py_that_does_not_compile_is_reported_at_every_boot_and_main_still_runs(tmp_path):
    broken = dict(FIRMWARE, **{"boot.py": "booted = (\n"})  # a SyntaxError, never cached
    main = "import json, machine\nprint('APP ' + json.dumps({'ran': 1}))\nmachine.deepsleep(60000)\n"
    broken["main.py"] = main
    plain, plain_errors, _ = _board(tmp_path, "plain", broken, wakes=2)
    fast, fast_errors, _ = _board(tmp_path, "fast", broken, "--code-rom", wakes=2)
    assert plain == fast == [{"ran": 1}] * 3
    assert plain_errors == fast_errors == 3  # one per boot


MOUNT = """
import os, flashdev
flashdev.mount_image(%(img)r, 16, 1024, "/flash")
with open("/flash/a.txt", "w") as f:
    f.write("kept")
os.umount("/flash")
flashdev.mount_image(%(img)r, 16, 1024, "/flash")
print(open("/flash/a.txt").read())
os.umount("/flash")
try:
    flashdev.mount_image(%(junk)r, 16, 32, "/flash")
    print("mounted")
except OSError as e:
    print("refused" if "does not mount" in str(e) else repr(e))
"""


@pytest.mark.parametrize("junk_size", [4096, 16 * 4096])
def test_mount_image_makes_erased_flash_and_never_formats_an_image_that_does_not_mount(tmp_path, junk_size):
    img, junk = tmp_path / "new.img", tmp_path / "junk.img"
    junk.write_bytes(b"\x00" * junk_size)
    rc, out, err = run_micropython(["-c", MOUNT % {"img": str(img), "junk": str(junk)}], sim=False, heapsize="200K")
    assert rc == 0, err
    assert out.split() == ["kept", "refused"]
    data = img.read_bytes()
    assert len(data) == 16 * 4096
    # littlefs wrote its superblock pair and the file's metadata; the rest is still erased
    erased = [data[i:i + 4096] == b"\xff" * 4096 for i in range(0, len(data), 4096)]
    assert erased.count(False) <= 4 and all(erased[4:])
    assert junk.read_bytes()[:junk_size] == b"\x00" * junk_size  # untouched (padded past its end at most)
