"""A virtual ESP32 (the original, ESP32-D0WD-V3 rev v3.0) as its ROM serial bootloader
shows it to a host: the loader protocol that the real ``esptool`` speaks, on a flash chip
kept in a file.

Theory of operation
-------------------
``RomLoader.feed(bytes)`` takes what the host wrote and returns what the chip answers: SLIP
frames in both directions, each request ``00 cmd len(u16) checksum(u32) data`` and each
response ``01 cmd len(u16) value(u32) data status(4)`` (little-endian; the ESP32 *ROM*
ends its data with four status bytes, status then error then two reserved; Espressif,
esptool docs "Serial Protocol"). It is pure (bytes in, bytes out) so it can sit behind a
pty, a socket or a test; ``simulators.virtual_board`` puts it on a pty.

What is modelled, from esptool's source (``esptool/loader.py``, ``targets/esp32.py``,
``cmds.py``, v5.x) and the "Serial Protocol" and "Boot Mode Selection" pages:

* SYNC (0x08): the 36-byte sync payload answered eight times with value 0x20120707
  (the ROM's reply in the docs' trace; the stub answers 0, which is how esptool tells them
  apart), so esptool's ``sync()`` reads its eight replies.
* READ_REG (0x0A) / WRITE_REG (0x09) of the chip's registers (``simulators.esp32_chip``:
  chip-detect magic, eFuses with the MAC, revision, crystal, straps, and the SPI1 controller
  esptool uses to send raw SPI flash commands).
* SPI_ATTACH (0x0D), SPI_SET_PARAMS (0x0B), FLASH_BEGIN/DATA/END (0x02-0x04, the ROM
  erases the whole region at BEGIN; DATA blocks carry the XOR checksum seeded 0xEF),
  FLASH_DEFL_BEGIN/DATA/END (0x10-0x12: zlib-compressed data, the ROM's size rounded up
  to whole blocks), SPI_FLASH_MD5 (0x13: the ROM answers 32 lowercase hex digits),
  READ_FLASH_SLOW (0x0E: 64 bytes a request), CHANGE_BAUDRATE (0x0F), MEM_BEGIN/DATA/END
  (0x05-0x07: RAM downloads are accepted and checked but never executed).
* FLASH_END / FLASH_DEFL_END with 1 ("run user code") leave the loader (``exit`` becomes
  ``"run"``); with 0 ("reboot") the chip resets into the loader again (``"reboot"``: the
  strapping pins are latched, esptool's ``soft_reset`` notes the same).

Anything else is answered as the ROM answers a command it rejects: status 1, error 0x05
("the format of the received message is invalid"), and the request is kept in
``rejected`` — a READ_REG of a register the model does not hold, a WRITE_REG outside the
SPI controller, a SPI flash command it does not know, GET_SECURITY_INFO (the ESP32 has none)
and the stub-only commands (0xD0-0xD3) all fail loudly in esptool rather than getting
made-up values. The flasher stub is not modelled: run esptool with ``--no-stub`` (a stub
upload ends at MEM_END with no "OHAI" and esptool reports it could not start the stub).

The flash and the registers are ``simulators.esp32_chip``.
"""

import struct
import zlib

from simulators.esp32_chip import SECTOR

# Command codes: esptool ``ESPLoader.ESP_CMDS`` (Serial Protocol "Commands").
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SYNC, WRITE_REG, READ_REG = 0x08, 0x09, 0x0A
SPI_SET_PARAMS, SPI_ATTACH, READ_FLASH_SLOW, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0E, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END, SPI_FLASH_MD5 = 0x10, 0x11, 0x12, 0x13

CHECKSUM_SEED = 0xEF  # Serial Protocol "Checksum"
SYNC_PAYLOAD = b"\x07\x07\x12\x20" + b"\x55" * 32
SYNC_VALUE = 0x20120707  # the ROM's value in the Serial Protocol page's SYNC trace

# ROM loader error codes (Serial Protocol "ROM Loader Errors").
ERR_INVALID_MESSAGE = 0x05
ERR_FAILED = 0x06
ERR_CHECKSUM = 0x07
ERR_DEFLATE = 0x0B


def checksum(data, state=CHECKSUM_SEED):
    for b in data:
        state ^= b
    return state


# -- SLIP ---------------------------------------------------------------------------------------
def slip_encode(packet):
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


class SlipDecoder:
    """Bytes in, whole packets out; anything outside a frame is dropped (as the ROM does)."""

    def __init__(self):
        self._buf = None
        self._escape = False

    def feed(self, data):
        packets = []
        for b in data:
            if self._buf is None:
                if b == 0xC0:
                    self._buf = bytearray()
                continue
            if self._escape:
                self._escape = False
                self._buf.append({0xDC: 0xC0, 0xDD: 0xDB}.get(b, b))
            elif b == 0xDB:
                self._escape = True
            elif b == 0xC0:
                if self._buf:  # a 0xC0 0xC0 pair is an end and a start
                    packets.append(bytes(self._buf))
                    self._buf = None
                else:
                    self._buf = bytearray()
            else:
                self._buf.append(b)
        return packets


# -- the loader ----------------------------------------------------------------------------------
class RomLoader:
    """The ESP32 ROM loader's protocol over one chip (see the module docstring).

    ``exit`` is None while the loader runs, then ``"run"`` (run user code) or ``"reboot"``.
    ``log`` lists (command name, detail) of what was done; ``rejected`` what was refused."""

    def __init__(self, chip):
        self.chip = chip
        self.slip = SlipDecoder()
        self.attached = False
        self.op = None  # the download in progress
        self.exit = None
        self.log = []
        self.rejected = []

    def feed(self, data):
        out = b""
        for packet in self.slip.feed(data):
            if self.exit is not None:
                break
            out += b"".join(slip_encode(r) for r in self.handle(packet))
        return out

    # one request -> its responses (unframed)
    def handle(self, packet):
        if len(packet) < 8 or packet[0] != 0x00:
            return []  # not a request: the ROM ignores it
        op, size, chk = struct.unpack_from("<BHI", packet, 1)
        data = packet[8:]
        if len(data) != size:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        handler = _HANDLERS.get(op)
        if handler is None:
            return [self._reject(op, data, "command not supported by the ESP32 ROM loader")]
        return handler(self, op, data, chk)

    def _reply(self, op, value=0, body=b"", error=None):
        status = b"\x00\x00\x00\x00" if error is None else bytes((1, error, 0, 0))
        payload = body + status
        return struct.pack("<BBHI", 0x01, op, len(payload), value) + payload

    def _reject(self, op, data, why):
        self.rejected.append((op, data.hex(), why))
        return self._reply(op, error=ERR_INVALID_MESSAGE)

    def _sync(self, op, data, chk):
        if data != SYNC_PAYLOAD:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        return [self._reply(op, SYNC_VALUE)] * 8

    def _read_reg(self, op, data, chk):
        (addr,) = struct.unpack("<I", data[:4]) if len(data) == 4 else (None,)
        value = None if addr is None else self.chip.read_reg(addr)
        if value is None:
            return [self._reject(op, data, "register not modelled")]
        return [self._reply(op, value)]

    def _write_reg(self, op, data, chk):
        if len(data) != 16:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        addr, value, mask, _delay_us = struct.unpack("<IIII", data)
        if not self.chip.write_reg(addr, value, mask):
            return [self._reject(op, data, "register or SPI flash command not modelled")]
        return [self._reply(op)]

    def _spi_attach(self, op, data, chk):
        if len(data) != 8:  # the ROM takes a second word (esptool flash_spi_attach)
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        self.attached = True
        return [self._reply(op)]

    def _spi_set_params(self, op, data, chk):
        if len(data) != 24:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        _id, total, _block, sector, _page, _mask = struct.unpack("<6I", data)
        if total > self.chip.flash.size or sector != SECTOR:
            return [self._reply(op, error=ERR_FAILED)]
        return [self._reply(op)]

    def _change_baud(self, op, data, chk):
        if len(data) != 8:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        self.chip.baud = struct.unpack("<II", data)[0] or self.chip.baud
        return [self._reply(op)]

    def _begin(self, op, data, chk):
        if len(data) != 16:  # the ESP32 ROM takes no fifth (encryption) word
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        size, blocks, block_size, offset = struct.unpack("<IIII", data)
        if op == MEM_BEGIN:
            self.op = {"kind": "mem", "blocks": blocks, "block_size": block_size, "next": 0}
            self.log.append(("MEM_BEGIN", "0x%x+%d" % (offset, size)))
            return [self._reply(op)]
        if not self.attached:
            return [self._reply(op, error=ERR_FAILED)]
        if offset % SECTOR or offset + size > self.chip.flash.size:
            return [self._reply(op, error=ERR_FAILED)]
        self.chip.flash.erase(offset, size)  # the ROM erases up front (Serial Protocol)
        self.op = {"kind": "defl" if op == FLASH_DEFL_BEGIN else "flash", "offset": offset, "size": size,
                   "blocks": blocks, "block_size": block_size, "next": 0, "written": 0,
                   "inflate": zlib.decompressobj() if op == FLASH_DEFL_BEGIN else None}
        self.log.append(("FLASH_DEFL_BEGIN" if op == FLASH_DEFL_BEGIN else "FLASH_BEGIN",
                         "0x%x+%d" % (offset, size)))
        return [self._reply(op)]

    def _data(self, op, data, chk):
        kind = {FLASH_DATA: "flash", FLASH_DEFL_DATA: "defl", MEM_DATA: "mem"}[op]
        if len(data) < 16:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        n, seq, _, _ = struct.unpack_from("<IIII", data)
        block = data[16:]
        o = self.op
        if o is None or o["kind"] != kind or len(block) != n or seq >= o["blocks"]:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        if checksum(block) != chk & 0xFF:
            return [self._reply(op, error=ERR_CHECKSUM)]
        if seq != o["next"]:  # a retried block was already taken
            return [self._reply(op)] if seq == o["next"] - 1 else [self._reply(op, error=ERR_INVALID_MESSAGE)]
        o["next"] += 1
        if kind == "mem":
            return [self._reply(op)]
        if kind == "defl":
            try:
                block = o["inflate"].decompress(block)
            except zlib.error:
                return [self._reply(op, error=ERR_DEFLATE)]
        # FLASH_DATA's last block comes padded with 0xFF past the erased size (programming
        # 0xFF changes nothing); inflated data must fit the size FLASH_DEFL_BEGIN erased
        limit = o["size"] if kind == "defl" else o["blocks"] * o["block_size"]
        if o["written"] + len(block) > limit or o["offset"] + o["written"] + len(block) > self.chip.flash.size:
            return [self._reply(op, error=ERR_FAILED)]
        self.chip.flash.program(o["offset"] + o["written"], block)
        o["written"] += len(block)
        return [self._reply(op)]

    def _end(self, op, data, chk):
        if op == MEM_END:
            if len(data) != 8:
                return [self._reply(op, error=ERR_INVALID_MESSAGE)]
            no_entry, entry = struct.unpack("<II", data)
            self.op = None
            if not no_entry:  # code is never executed here: the chip goes silent
                self.log.append(("MEM_END", "jump to 0x%x not modelled" % entry))
                self.rejected.append((op, data.hex(), "executing downloaded code (a stub) is not modelled"))
                self.exit = "halted"
                return []
            return [self._reply(op)]
        if len(data) != 4:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        run_user_code = struct.unpack("<I", data)[0]
        self.op = None
        self.exit = "run" if run_user_code else "reboot"
        self.log.append(("FLASH_END", self.exit))
        return [self._reply(op)]

    def _md5(self, op, data, chk):
        if len(data) != 16:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        addr, size, _, _ = struct.unpack("<IIII", data)
        if addr + size > self.chip.flash.size:
            return [self._reply(op, error=ERR_FAILED)]
        return [self._reply(op, body=self.chip.flash.md5(addr, size).encode())]

    def _read_slow(self, op, data, chk):
        if len(data) != 8:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        addr, n = struct.unpack("<II", data)
        if n > 64 or addr + 64 > self.chip.flash.size:
            return [self._reply(op, error=ERR_FAILED)]
        return [self._reply(op, body=self.chip.flash.read(addr, 64))]  # always 64 (esptool)


_HANDLERS = {
    SYNC: RomLoader._sync, READ_REG: RomLoader._read_reg, WRITE_REG: RomLoader._write_reg,
    SPI_ATTACH: RomLoader._spi_attach, SPI_SET_PARAMS: RomLoader._spi_set_params,
    CHANGE_BAUDRATE: RomLoader._change_baud,
    FLASH_BEGIN: RomLoader._begin, FLASH_DEFL_BEGIN: RomLoader._begin, MEM_BEGIN: RomLoader._begin,
    FLASH_DATA: RomLoader._data, FLASH_DEFL_DATA: RomLoader._data, MEM_DATA: RomLoader._data,
    FLASH_END: RomLoader._end, FLASH_DEFL_END: RomLoader._end, MEM_END: RomLoader._end,
    SPI_FLASH_MD5: RomLoader._md5, READ_FLASH_SLOW: RomLoader._read_slow,
}
