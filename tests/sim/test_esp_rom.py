"""The virtual ESP32 ROM loader (``simulators.esp_rom`` over ``simulators.esp32_chip``):
byte-level checks of the protocol rules it follows (Espressif's "Serial Protocol" page),
its registers read back through esptool's own decoding, and the real esptool CLI on a
``VirtualBoard`` pty."""

import hashlib
import struct
import subprocess
import sys
import zlib

import pytest
from esptool.targets.esp32 import ESP32ROM

from simulators import esp32_chip
from simulators.esp32_chip import Esp32Chip, SpiFlash
from simulators.esp_rom import (FLASH_BEGIN, FLASH_DATA, FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, MEM_BEGIN, MEM_END,
                                READ_REG, SPI_ATTACH, SPI_FLASH_MD5, SYNC, RomLoader, SlipDecoder, checksum,
                                slip_encode)
from simulators.i2c_server import SimServer
from simulators.virtual_board import VirtualBoard

MAC = bytes.fromhex("240ac4a1b2c3")
ESPTOOL = [sys.executable, "-m", "esptool"]


def request(op, data=b"", chk=0):
    return slip_encode(struct.pack("<BBHI", 0, op, len(data), chk) + data)


def responses(rom, op, data=b"", chk=0):
    """[(op, value, body, status bytes)] for one request."""
    out = []
    for p in SlipDecoder().feed(rom.feed(request(op, data, chk))):
        direction, rop, size, value = struct.unpack_from("<BBHI", p)
        assert direction == 1 and size == len(p) - 8
        out.append((rop, value, p[8:-4], p[-4:]))
    return out


@pytest.fixture
def rom(tmp_path):
    return RomLoader(Esp32Chip(SpiFlash(tmp_path / "flash.bin"), MAC))


def attached(rom):
    assert responses(rom, SPI_ATTACH, bytes(8))[0][3] == b"\0\0\0\0"
    return rom


def test_sync_is_answered_eight_times_by_the_rom(rom):
    got = responses(rom, SYNC, b"\x07\x07\x12\x20" + b"\x55" * 32)
    assert len(got) == 8  # esptool's sync() reads the first reply and seven more
    assert all(r == (SYNC, 0x20120707, b"", b"\0\0\0\0") for r in got)  # non-zero: the ROM, not the stub


def test_slip_escapes_survive_both_directions():
    packet = b"\x01\xc0\xdb\xc0\xdb\xdc"
    framed = slip_encode(packet)
    assert b"\xc0" not in framed[1:-1]
    assert SlipDecoder().feed(b"noise" + framed + framed[:3]) == [packet]  # bytes outside a frame dropped


def test_registers_decode_through_esptool_as_an_esp32_d0wd_v3():
    chip = Esp32Chip(None, MAC)
    target = ESP32ROM.__new__(ESP32ROM)  # esptool's own decoding of the registers, no port
    target.read_reg = lambda addr, timeout=None: chip.read_reg(addr)
    assert chip.read_reg(esp32_chip.CHIP_DETECT_MAGIC_REG) == ESP32ROM.MAGIC_VALUE
    assert target.read_mac() == tuple(MAC)
    assert target.get_chip_description() == "ESP32-D0WD-V3 (revision v3.0)"
    assert target.get_chip_features()[:3] == ["Wi-Fi", "BT", "Dual Core + LP Core"]
    assert not target.get_flash_encryption_enabled() and not target.get_secure_boot_enabled()
    # the MAC's CRC-8 in eFuse word 2 [23:16] is what espefuse checks
    from espefuse.efuse.esp32.fields import EfuseMacField

    crc = chip.read_reg(esp32_chip.EFUSE_RD_BASE + 8) >> 16 & 0xFF
    assert EfuseMacField.get_and_check(MAC, crc).endswith("OK)")


def test_a_register_the_model_does_not_hold_is_refused_not_invented(rom):
    (op, value, body, status), = responses(rom, READ_REG, struct.pack("<I", 0x3FF48074))
    assert (value, status[:2]) == (0, b"\x01\x05")
    assert rom.rejected[-1][0] == READ_REG


def test_flash_needs_spi_attach_then_a_block_with_a_bad_checksum_is_refused(rom):
    begin = struct.pack("<IIII", 0x1000, 1, 0x400, 0x10000)
    assert responses(rom, FLASH_BEGIN, begin)[0][3][:2] == b"\x01\x06"  # ROM: SPI_ATTACH first
    attached(rom)
    assert responses(rom, FLASH_BEGIN, begin)[0][3] == b"\0\0\0\0"
    block = bytes(range(256)) * 4
    header = struct.pack("<IIII", len(block), 0, 0, 0)
    assert responses(rom, FLASH_DATA, header + block, checksum(block) ^ 1)[0][3][:2] == b"\x01\x07"
    assert rom.chip.flash.read(0x10000, 4) == b"\xff" * 4  # nothing written
    assert responses(rom, FLASH_DATA, header + block, checksum(block))[0][3] == b"\0\0\0\0"
    assert rom.chip.flash.read(0x10000, 0x400) == block


def test_compressed_download_and_md5_as_the_rom_reports_it(rom):
    attached(rom)
    data = b"civicedge" * 1000
    packed = zlib.compress(data, 9)
    size = -(-len(data) // 0x400) * 0x400  # the ROM is given the size rounded to whole blocks
    assert responses(rom, FLASH_DEFL_BEGIN, struct.pack("<IIII", size, 1, 0x400, 0x20000))[0][3] == b"\0\0\0\0"
    assert responses(rom, FLASH_DEFL_DATA, struct.pack("<IIII", len(packed), 0, 0, 0) + packed,
                     checksum(packed))[0][3] == b"\0\0\0\0"
    (op, value, body, status), = responses(rom, SPI_FLASH_MD5, struct.pack("<IIII", 0x20000, len(data), 0, 0))
    assert body == hashlib.md5(data).hexdigest().encode()  # 32 lower-case hex digits, not raw bytes


def test_programming_without_erase_only_clears_bits(tmp_path):
    flash = SpiFlash(tmp_path / "f.bin")
    flash.program(0, b"\x0f\xf0")
    flash.program(0, b"\xff\x00")
    assert flash.read(0, 2) == b"\x0f\x00"
    flash.erase(0, 1)
    assert flash.read(0, 2) == b"\xff\xff"


def test_downloaded_code_is_never_run_the_chip_goes_silent(rom):
    assert responses(rom, MEM_BEGIN, struct.pack("<IIII", 16, 1, 16, 0x40080000))[0][3] == b"\0\0\0\0"
    assert responses(rom, MEM_END, struct.pack("<II", 0, 0x40080000)) == []  # no OHAI: the stub is not modelled
    assert rom.exit == "halted"


# -- the real esptool on a virtual board's pty ---------------------------------------------------
def esptool(board, *args, after="no-reset"):
    r = subprocess.run(ESPTOOL + ["--port", board.port, "--no-stub", "--before", "no-reset", "--after", after]
                       + [str(a) for a in args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture
def board(tmp_path):
    with SimServer() as srv, VirtualBoard(tmp_path / "board", srv, mac=MAC) as b:
        yield b


def test_esptool_identifies_the_chip_and_reads_its_mac(board):
    rc, out = esptool(board, "read-mac")
    assert rc == 0, out
    assert "Chip type:          ESP32-D0WD-V3 (revision v3.0)" in out
    assert "Crystal frequency:  40MHz" in out
    assert "MAC:                24:0a:c4:a1:b2:c3" in out


def test_esptool_writes_verifies_and_reads_back_flash(board, tmp_path):
    image = tmp_path / "app.bin"
    image.write_bytes(esp32_chip.fake_firmware_image())
    rc, out = esptool(board, "write-flash", "--compress", "0x1000", image)
    assert rc == 0, out
    assert "Hash of data verified." in out
    rc, out = esptool(board, "verify-flash", "0x1000", image)
    assert rc == 0 and "Verification successful (digest matched)." in out, out
    rc, out = esptool(board, "read-flash", "0x1000", "256", tmp_path / "back.bin")
    assert rc == 0, out
    assert (tmp_path / "back.bin").read_bytes() == image.read_bytes()[:256]
    rc, out = esptool(board, "flash-id")  # reads the flash over SPI commands, then a register not modelled
    assert "Manufacturer: 20" in out and "Device: 4016" in out and "Detected flash size: 4MB" in out


def test_esptool_leaves_the_loader_by_running_user_code(board, tmp_path):
    image = tmp_path / "app.bin"
    image.write_bytes(esp32_chip.fake_firmware_image())
    rc, out = esptool(board, "write-flash", "0x1000", image, after="soft-reset")
    assert rc == 0, out
    assert board.wait_for(b"MicroPython v", 30), board.transcript()[-600:]  # a valid image at 0x1000: it boots
    assert board.mode == "run"


def test_what_the_rom_cannot_do_fails_in_esptool_with_its_own_message(board):
    rc, out = esptool(board, "erase-flash")
    assert rc != 0 and "ESP32 ROM does not support function erase_flash" in out  # stub-only command
    r = subprocess.run(ESPTOOL + ["--port", board.port, "--before", "no-reset", "read-mac"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Failed to start stub flasher" in r.stdout + r.stderr
