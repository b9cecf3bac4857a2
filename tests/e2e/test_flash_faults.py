"""``civicedge flash`` when things go wrong: the cable pulled mid-copy (a clear error, and
a rerun repairs the board without copying what is already there), a board not in its ROM
loader on a port that cannot reset it, and ``--dry-run`` touching nothing."""

import hashlib

from civicedge import assets
from simulators.i2c_server import SimServer
from simulators.virtual_board import VirtualBoard
from tests.e2e.nodeharness import ROOM, LinkStub
from tests.e2e.test_flash import DEVICE, flash_args, flash_cli, make_site


def test_port_vanishing_mid_copy_is_a_clear_error_and_a_rerun_repairs(tmp_path, capsys):
    inventory, site_dir, key, image = make_site(tmp_path)
    with SimServer() as srv, LinkStub({DEVICE: key}) as gateway:
        srv.rig.setup([{"model": "scd4x", "truth": ROOM, "seed": 3}])
        with VirtualBoard(tmp_path / "board", srv, env={"CIVICEDGE_UART2": gateway.port_path}) as board:
            first_port = board.port
            board.unplug_after(60000, mode="run")  # ~a third of the copy (base64 over the raw REPL)
            rc = flash_cli(*flash_args(board, inventory, "--firmware", image, "--erase"))
            out, err = capsys.readouterr()
            assert rc == 1
            assert board.port is None and board.mode == "off"
            assert "lost the board on %s while copying" % first_port in err
            assert "run the same command again" in err
            assert "copy:" in out and "CHECK" not in out  # it stopped mid-copy, before any self-test
            assert assets.read(site_dir) == []  # nothing recorded for a board that was not finished

            board.plug()  # reconnected: powers on and boots what it has (no main.py yet: the REPL)
            assert board.wait_for(b">>> ", 20)
            rc = flash_cli(*flash_args(board, inventory))
            out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert "read over the REPL: esptool could not reach the ROM loader" in out  # no DTR/RTS on a pty
    copied = [line for line in out.splitlines() if line.startswith("copy: ") and " written, " in line][0]
    written, kept = int(copied.split()[1]), int(copied.split(", ")[1].split()[0])
    assert kept > 0 and written > 0  # what arrived before the cable was pulled was kept
    assert "FAIL" not in out[out.index("CHECK"):]
    row = assets.read(site_dir)[0]
    assert row["result"] == "pass" and row["mac"] == "24:0a:c4:12:34:56"
    assert gateway.records  # the repaired board runs the firmware


def test_a_board_outside_its_rom_loader_on_a_port_without_reset_lines(tmp_path, capsys):
    inventory, site_dir, key, image = make_site(tmp_path)
    with SimServer() as srv:
        with VirtualBoard(tmp_path / "board", srv, boot="flash") as board:
            assert board.wait_for(b"invalid header: 0xffffffff", 10)  # an erased chip, booting
            rc = flash_cli(*flash_args(board, inventory, "--firmware", image))
            out, err = capsys.readouterr()
    assert rc == 1
    assert "no answer from the ESP32 ROM loader" in err
    assert "hold BOOT, press and release EN, release BOOT" in err
    assert assets.read(site_dir) == []


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path, capsys):
    inventory, site_dir, key, image = make_site(tmp_path)
    with SimServer() as srv:
        with VirtualBoard(tmp_path / "board", srv) as board:
            before = hashlib.sha256(board.flash.read(0, board.flash.size)).hexdigest()
            rc = flash_cli(*flash_args(board, inventory, "--firmware", image, "--erase", "--dry-run"))
            out, err = capsys.readouterr()
            assert rc == 0, err
            assert board.received == 0 and board.mode == "download"
            assert hashlib.sha256(board.flash.read(0, board.flash.size)).hexdigest() == before
    assert not assets.register_path(site_dir).exists()
    assert "erase the whole flash" in out and "write %s" % image in out
    assert "a reading from co2 (scd4x at 0x62)" in out
    assert out.rstrip().endswith("dry run: nothing was done")
