"""``civicedge flash`` against a virtual board (``simulators.virtual_board``) with the real
esptool and mpremote: the board gets MicroPython, the bundle and its key, boots the
flashed firmware (whose frames the gateway stub verifies with the provisioned key), and
its self-test passes — or, with its CO2 sensor missing, fails naming it and its address.

The helpers here (``make_site``, ``flash_cli``) are shared with test_flash_faults.py.
"""

import argparse
import hashlib
import json
import os
import pathlib
import select
import threading
import tty

import pytest

from civicedge import assets, cmd_flash
from civicedge import firmware_build as fb
from simulators import esp32_chip
from simulators.i2c_server import SimServer
from simulators.virtual_board import VirtualBoard
from tests.e2e.nodeharness import ROOM, LinkStub, wait_for

DEVICE = "tst1-rm1-co2"
INVENTORY = """\
inventory_version = 1

[site]
id = "tst1"

[[gateways]]
id = "gw1"
location = { room = "Office" }
host = "tst1-gw1.local"
serial_ports = ["/dev/ttyUSB0"]
upstream_host = "mqtt.council.example.gov.uk"
upstream_ca_file = "/etc/civicedge/tls/council-ca.pem"

[[devices]]
id = "tst1-rm1-co2"
profile = "classroom-co2"
link = "serial"
location = { room = "Room 1", lat = 51.5, lon = -0.12 }
"""


def make_site(tmp):
    """An inventory, and the site directory provisioning leaves for DEVICE: its bundle
    (``firmware_build.build``) and secrets file (a fresh random 128-bit device key)."""
    tmp = pathlib.Path(tmp)
    inventory = tmp / "inventory.toml"
    inventory.write_text(INVENTORY)
    site = tmp / "tst1"
    fb.build("esp32-devkitc", "classroom-co2", DEVICE, site / "bundles" / DEVICE, link="serial")
    (site / "secrets" / "devices").mkdir(parents=True)
    key = os.urandom(16)
    secrets = site / "secrets" / "devices" / (DEVICE + ".json")
    secrets.write_text(json.dumps({"device_key_hex": key.hex()}))
    secrets.chmod(0o600)
    image = tmp / "micropython.bin"
    image.write_bytes(esp32_chip.fake_firmware_image())
    return inventory, site, key, image


def flash_cli(*argv):
    """Run ``civicedge flash|console|assets ...`` in-process; returns its exit status."""
    parser = argparse.ArgumentParser(prog="civicedge")
    cmd_flash.register(parser.add_subparsers())
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def flash_args(board, inventory, *extra):
    return ["flash", "--port", board.port, "--inventory", inventory, "--device", DEVICE,
            "--boot-wait", "2"] + list(extra)


class NullModem:
    """Two ptys joined like a null-modem cable: the node's UART opens ``node_port``, a tool
    (the console) opens ``tool_port``. Bytes nobody reads are dropped once a pty is full,
    as a UART with no listener loses them."""

    def __init__(self):
        self._fds = []
        ends = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._fds += [master, slave]
            ends.append((master, os.ttyname(slave)))
        (self._a, self.node_port), (self._b, self.tool_port) = ends
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in self._fds:
            os.close(fd)

    def _run(self):
        peer = {self._a: self._b, self._b: self._a}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(peer), [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                    os.write(peer[fd], data)
                except OSError:  # nothing to read after all, or the far pty is full: dropped
                    pass


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path)


def test_flash_writes_micropython_and_the_bundle_and_the_self_test_passes(tmp_path, site, capsys):
    inventory, site_dir, key, image = site
    with SimServer() as srv, LinkStub({DEVICE: key}) as gateway:
        srv.rig.setup([{"model": "scd4x", "truth": ROOM, "seed": 5}])
        with VirtualBoard(tmp_path / "board", srv, env={"CIVICEDGE_UART2": gateway.port_path}) as board:
            assert board.mode == "download"  # BOOT held at power-on: the ROM loader waits
            rc = flash_cli(*flash_args(board, inventory, "--firmware", image, "--erase"))
            out = capsys.readouterr().out
            transcript = board.transcript()
            flash = board.flash.read(0x1000, len(image.read_bytes()))
            wait_for(lambda: gateway.records, 30)  # the node runs on after the flash
    assert rc == 0, out
    assert "ESP32-D0WD-V3 (revision v3.0), MAC 24:0a:c4:12:34:56" in out  # esptool read the eFuses
    assert "Hash of data verified." in out  # esptool's MD5 check against the ROM loader
    assert flash == image.read_bytes()
    assert b"Performing initial setup" in transcript  # the erased vfs was formatted by MicroPython
    table = out[out.index("CHECK"):]
    assert "FAIL" not in table
    for line in ("PASS  boot", "PASS  firmware", "PASS  i2c scan  bus 0", "PASS  sensor    co2 (scd4x at 0x62",
                 "PASS  link      serial"):
        assert line in table
    # the flashed firmware ran with the provisioned key: its frames verified at the gateway
    assert gateway.records and {device for device, _, _ in gateway.records} == {DEVICE}
    rows = assets.read(site_dir)
    manifest = json.loads((site_dir / "bundles" / DEVICE / "manifest.json").read_text())
    assert len(rows) == 1
    row = rows[0]
    assert (row["device"], row["location"], row["profile"], row["board"], row["result"]) == (
        DEVICE, "Room 1", "classroom-co2", "esp32-devkitc", "pass")
    assert row["mac"] == "24:0a:c4:12:34:56" and row["chip"].startswith("ESP32-D0WD-V3")
    assert row["firmware_version"] == manifest["firmware_version"]
    assert row["micropython_image"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert row["flashed_at"].endswith("Z") and row["failures"] == ""


def test_a_missing_sensor_fails_the_self_test_naming_it_and_its_address(tmp_path, site, capsys):
    inventory, site_dir, key, image = site
    with SimServer() as srv, NullModem() as cable:
        srv.rig.setup([])  # the SCD41 is not connected
        with VirtualBoard(tmp_path / "board", srv, env={"CIVICEDGE_UART2": cable.node_port}) as board:
            rc = flash_cli(*flash_args(board, inventory, "--firmware", image))
            out = capsys.readouterr().out
            # the node runs on, reporting the failed sensor: the console on its link shows it
            assert flash_cli("console", "--port", cable.tool_port, "--site-dir", site_dir, "--seconds", "4") == 0
            console = capsys.readouterr().out
    assert "[frame from tst1-rm1-co2: epoch" in console
    assert "co2_ppm=None [sensor_failed]" in console
    assert rc == 1
    table = out[out.index("CHECK"):]
    assert "FAIL  sensor    co2 (scd4x at 0x62, bus 0)  co2 (scd4x) not found at 0x62 on I2C bus 0" in table
    assert "PASS  i2c scan  bus 0                       found nothing" in table
    assert "PASS  boot" in table  # the firmware itself started
    row = assets.read(site_dir)[0]
    assert row["result"] == "fail"
    assert "co2 (scd4x) not found at 0x62 on I2C bus 0" in row["failures"]
