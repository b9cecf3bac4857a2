"""The board shim's switched sensor rail (``simulators/mpy/machine.py``, ``board.py --rail``):
the rail pin the firmware drives powers the simulated parts off and on (one CONTROL per
change), a deep sleep drops the rail unless the pin is held, and a stuck bus that a part holds
(``released_by_power``) lets go with the part's power. Observed on the parts themselves: their
power state and what they answer after power-on (the TMP117's Configuration reset value,
its power-up NACK)."""

import json
import textwrap

import pytest

from drivers.tmp117 import CONFIG_RESET
from simulators.faults import Fault
from simulators.i2c_server import SimServer
from simulators.mpyrun import SHIM, run_micropython

TMP117 = 0x48
SPEC = {"model": "tmp117", "address": TMP117, "truth": {"temperature_c": 20.0}, "seed": 1}
SHUTDOWN_CONFIG = 0x0420  # MOD = shutdown (bits 11:10 = 01), averaging bits as the reset value's


@pytest.fixture
def server():
    with SimServer() as srv:
        yield srv


def mpy(server, code, args=()):
    rc, out, err = run_micropython(["-c", textwrap.dedent(code)] + list(args), server=server, heapsize="256K")
    assert rc == 0, out + err
    return [json.loads(line[4:]) for line in out.splitlines() if line.startswith("OUT ")]


def test_the_rail_pin_powers_the_parts_off_and_on_with_one_control_per_change(server):
    server.rig.setup([SPEC])
    out = mpy(server, """
        import errno, json, machine, simlink, simrail
        from machine import Pin
        from simrig import RemoteRig, SimClock
        simrail.config("25:active_low")
        rig, clock, i2c = RemoteRig(fresh=False), SimClock(), machine.I2C(0)
        def config():
            i2c.writeto(0x48, b"\\x01")
            b = i2c.readfrom(0x48, 2)
            return b[0] << 8 | b[1]
        def nack(fn):
            try:
                fn()
            except OSError as e:
                return e.errno == errno.ENODEV
            return False
        rail = Pin(25, Pin.OUT, value=1)  # the off level of an active-low rail
        print("OUT", json.dumps([rig.attr(0x48, "powered"), nack(config)]))
        nack(lambda: i2c.writeto(0x48, b"\\x01\\x04\\x20"))  # shutdown mode: NACKed, the part is off
        rail.value(0)
        early = nack(config)  # within the TMP117's 1.5 ms power-up
        clock.sleep_ms(2)
        print("OUT", json.dumps([rig.attr(0x48, "powered"), early, config()]))
        i2c.writeto(0x48, b"\\x01\\x04\\x20")
        n = simlink.counts[0]
        for _ in range(3):
            rail.value(0)  # no change: no CONTROL
            Pin(25, Pin.OUT)  # the same pad: its output level goes on
        quiet = simlink.counts[0] - n
        print("OUT", json.dumps([quiet, config()]))
        Pin(25, Pin.IN)  # floating: the gate pull-up switches the rail off
        off = rig.attr(0x48, "powered")
        Pin(25, Pin.OPEN_DRAIN, value=0)  # open drain pulls the gate low: on
        clock.sleep_ms(2)
        print("OUT", json.dumps([off, rig.attr(0x48, "powered"), config()]))
    """)
    assert out[0] == [False, True]
    assert out[1] == [True, True, CONFIG_RESET]  # its power-on state, after its power-up time
    assert out[2] == [0, SHUTDOWN_CONFIG]  # redundant drives sent nothing; the part kept its state
    assert out[3] == [False, True, CONFIG_RESET]  # the rail went off and on: the state was lost


WAKE_APP = """
import json, machine, time
from machine import I2C, Pin

rail = Pin(25, Pin.OUT, value=0%s)  # active low: on
time.sleep_ms(5)
i2c = I2C(0)
i2c.writeto(0x48, b"\\x01")
b = i2c.readfrom(0x48, 2)
print("APP", json.dumps((b[0] << 8 | b[1]) & 0x0FFC))  # the settings, not the flags
i2c.writeto(0x48, b"\\x01\\x04\\x20")
machine.deepsleep(60000)
"""


@pytest.mark.parametrize("rail, hold, kept", [(None, "", True), ("25:active_low", "", False),
                                              ("25:active_low", ", hold=True", True)])
def test_a_deep_sleep_drops_the_rail_unless_the_pin_is_held(server, tmp_path, rail, hold, kept):
    fw = tmp_path / "fw"
    fw.mkdir()
    (fw / "main.py").write_text(WAKE_APP % hold)
    server.rig.setup([SPEC])
    args = [str(SHIM / "board.py"), "--flash", str(tmp_path / "flash.img"), "--wakes", "2", "--install", str(fw)]
    rc, out, err = run_micropython(args + (["--rail", rail] if rail else []), server=server, heapsize="128K")
    assert rc == 0, out + err
    configs = [json.loads(line[4:]) for line in out.splitlines() if line.startswith("APP ")]
    # the first boot finds the part as it was attached; later wakes as the sleep left it
    assert configs == [CONFIG_RESET] + [SHUTDOWN_CONFIG if kept else CONFIG_RESET] * 2, (configs, err)
    with server.lock:
        dev = server.rig.bus.devices[TMP117]
        # the last deep sleep: off with an unheld rail pin (the run ends before the next boot)
        assert dev.powered is (rail is None or kept)


def test_a_stuck_bus_a_part_holds_lets_go_with_its_power_over_the_socket(server):
    server.rig.setup([SPEC, {"model": "i2cxl", "address": 0x70, "truth": {"distance_cm": 80.0}}])
    server.rig.fault(None, {"kind": "stuck_bus", "released_by_power": True})
    server.rig.fault(None, {"kind": "stuck_bus", "start_s": 1.0, "end_s": 2.0})  # not held by a part
    out = mpy(server, """
        import errno, json, machine, simrail
        from machine import Pin
        from simrig import RemoteRig, SimClock
        simrail.config("25")  # active high
        rig, clock, i2c = RemoteRig(fresh=False), SimClock(), machine.I2C(0)
        def scan():
            try:
                return i2c.scan() or "none"
            except OSError as e:
                return errno.errorcode.get(e.errno, e.errno)
        rail = Pin(25, Pin.OUT, value=1)
        clock.sleep_ms(2)
        stuck = scan()
        rail.off()
        clock.sleep_ms(500)
        rail.on()
        clock.sleep_ms(2)
        freed = scan()
        clock.sleep_ms(1000)
        rail.off()
        rail.on()
        clock.sleep_ms(2)
        print("OUT", json.dumps([stuck, freed, scan()]))
    """)
    assert out == [["none", [TMP117, 0x70], "none"]]  # the second fault's window, not power, ends it


def test_released_by_power_belongs_to_a_stuck_bus_and_names_a_7_bit_holder():
    assert Fault.from_spec({"kind": "stuck_bus", "released_by_power": True, "holder": 0x48}).holder == 0x48
    assert not Fault("stuck_bus").released_by_power
    for spec in ({"kind": "nack", "released_by_power": True}, {"kind": "stuck_bus", "holder": 0x48},
                 {"kind": "stuck_bus", "released_by_power": True, "holder": 0x80}):
        with pytest.raises(ValueError, match="released_by_power|holder"):
            Fault.from_spec(spec)
