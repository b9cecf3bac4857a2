"""The virtual ESP32's hardware as its ROM loader reaches it (``simulators.esp_rom``): the
SPI flash chip kept in a file, and the registers a host reads or writes — an ESP32-D0WD-V3
rev v3.0 with a 4 MB XMC flash.

``SpiFlash`` is NOR flash in a file of ``FLASH_SIZE`` bytes (a new file is erased, all 0xFF):
erase sets 0xFF by 4 KB sector, programming only clears bits, so data written over unerased
flash reads back wrong exactly as on the chip. It answers the raw SPI commands esptool sends
through the SPI1 controller: RDID (0x9F) as an XMC XM25QH32 (20 40 16: the XMC IDs esptool's
``is_xmc_chip_strict`` accepts; 0x16 = 4 MB in esptool's ``DETECTED_FLASH_SIZES``), the SFDP
signature (0x5A, JESD216) and reset-enable/reset (0x66/0x99); any other is not modelled.

``Esp32Chip.read_reg`` holds what esptool reads on an ESP32 (``esptool/targets/esp32.py``):
the chip-detect magic at 0x40001000, eFuse BLOCK0 read words 0..6 (layout from espefuse's
``efuse_defs/esp32.yaml``), ``APB_CTL_DATE`` bit 31 (rev v3, as espefuse's emulator answers),
``UART_CLKDIV`` (40 MHz crystal / the baud rate), ``GPIO_STRAP`` (the strapping pins latched at
reset) and the SPI1 registers; anything else is None ("not modelled"), never a made-up value.
``write_reg`` reaches only the SPI1 controller; setting its CMD.USR bit runs the user command.

``boot_log`` is the ROM's text at a reset and ``boots_from_flash`` its check for an image at
0x1000 (esptool docs "Boot Mode Selection": "Invalid header"); ``fake_firmware_image`` makes
a valid ESP32 image (esptool's own writer) to stand in for MicroPython in tests.
"""

import hashlib
import os
import struct
import warnings

with warnings.catch_warnings():  # espefuse's CLI module imports a deprecated click parser
    warnings.simplefilter("ignore", DeprecationWarning)
    from espefuse.efuse.esp32.fields import EfuseMacField  # the ESP32 ROM's esp_crc8 for the MAC

FLASH_SIZE = 4 * 1024 * 1024  # 4 MB, the ESP32-WROOM-32E on the DevKitC v4
SECTOR = 0x1000  # erase unit (esptool ``FLASH_SECTOR_SIZE``)
BOOTLOADER_OFFSET = 0x1000  # esptool ``ESP32ROM.BOOTLOADER_FLASH_OFFSET``
IMAGE_MAGIC = 0xE9  # first byte of an ESP image (esptool ``ESP_IMAGE_MAGIC``)

# Registers (esptool ``targets/esp32.py`` unless noted).
CHIP_DETECT_MAGIC_REG = 0x40001000
MAGIC_VALUE = 0x00F01D83
EFUSE_RD_BASE = 0x3FF5A000
APB_CTL_DATE_ADDR = 0x3FF6607C
UART_CLKDIV_REG = 0x3FF40014
GPIO_STRAP_REG = 0x3FF44038
SPI_BASE = 0x3FF42000
_SPI_CMD, _SPI_ADDR, _SPI_USR, _SPI_USR1, _SPI_USR2 = 0x00, 0x04, 0x1C, 0x20, 0x24
_SPI_MISO_DLEN, _SPI_W0 = 0x2C, 0x80
_SPI_CMD_USR = 1 << 18
_USR_COMMAND, _USR_ADDR, _USR_MISO, _USR_MOSI = 1 << 31, 1 << 30, 1 << 28, 1 << 27
XTAL_HZ = 40000000

STRAP_DOWNLOAD = 0x03  # GPIO0 low: "boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))"
STRAP_FLASH = 0x13  # GPIO0 high: "boot:0x13 (SPI_FAST_FLASH_BOOT)"

FLASH_JEDEC_ID = (0x20, 0x40, 0x16)  # manufacturer XMC, type 0x40, capacity 0x16 (4 MB)
_SFDP_SIGNATURE = b"SFDP"  # JESD216: the first four bytes of the SFDP table

# RESET_REASON (ESP-IDF components/esp_rom/include/esp32/rom/rtc.h)
RESET_REASONS = {1: "POWERON_RESET", 5: "DEEPSLEEP_RESET", 7: "TG0WDT_SYS_RESET", 12: "SW_CPU_RESET"}


def boot_log(reason, download):
    """What the ROM prints at a reset (esptool docs "Boot Mode Selection", "Boot Log")."""
    strap = "0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))" if download else "0x13 (SPI_FAST_FLASH_BOOT)"
    text = "ets Jun  8 2016 00:22:57\r\nrst:0x%x (%s),boot:%s\r\n" % (reason, RESET_REASONS[reason], strap)
    return (text + ("waiting for download\r\n" if download else "")).encode()


# -- the flash chip ------------------------------------------------------------------------------
class SpiFlash:
    """NOR flash in a file: erase sets 0xFF by sector, programming only clears bits."""

    def __init__(self, path, size=FLASH_SIZE):
        self.path = str(path)
        self.size = size
        if not os.path.exists(self.path) or os.path.getsize(self.path) < size:
            with open(self.path, "ab") as f:
                missing = size - f.tell()
                while missing > 0:
                    n = min(missing, 1 << 16)
                    f.write(b"\xff" * n)
                    missing -= n

    def read(self, offset, n):
        if offset < 0 or offset + n > self.size:
            raise ValueError("read 0x%x+%d is outside the %d-byte flash" % (offset, n, self.size))
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(n)

    def erase(self, offset, n):
        """Erase the sectors covering [offset, offset+n)."""
        start = offset - offset % SECTOR
        end = min(self.size, -(-(offset + n) // SECTOR) * SECTOR)
        with open(self.path, "r+b") as f:
            f.seek(start)
            for _ in range((end - start) // SECTOR):
                f.write(b"\xff" * SECTOR)

    def program(self, offset, data):
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError("write 0x%x+%d is outside the %d-byte flash" % (offset, len(data), self.size))
        old = self.read(offset, len(data))
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(bytes(a & b for a, b in zip(old, data)))

    def md5(self, offset, n):
        return hashlib.md5(self.read(offset, n)).hexdigest()

    def spi_command(self, cmd, addr, read_bits):
        """Answer a raw SPI flash command; the bytes read back, or None if not modelled."""
        n = (read_bits + 7) // 8
        if cmd == 0x9F:  # RDID: manufacturer, memory type, capacity
            return bytes(FLASH_JEDEC_ID)[:n]
        if cmd == 0x5A and addr is not None and addr + n <= len(_SFDP_SIGNATURE):  # RDSFDP
            return _SFDP_SIGNATURE[addr:addr + n]
        if cmd in (0x66, 0x99) and n == 0:  # reset enable, reset: nothing is left to reset
            return b""
        return None


# -- the chip's registers ------------------------------------------------------------------------
def efuse_words(mac):
    """eFuse BLOCK0 read words 0..6 of an ESP32-D0WD-V3 rev v3.0 with base MAC ``mac``
    (espefuse ``efuse_defs/esp32.yaml``): MAC in word 1 and word 2 [15:0] (esptool's
    ``read_mac`` packs words 2 and 1 big-endian and drops two bytes), MAC_CRC word 2
    [23:16], CHIP_VER_REV1 word 3 [15], CHIP_PACKAGE word 3 [11:9] = 1 (D0WD),
    CHIP_VER_REV2 word 5 [20]; every other field (flash encryption, secure boot, coding
    scheme, SPI pad overrides, VDD_SPI) unprogrammed, 0."""
    mac = bytes(mac)
    if len(mac) != 6:
        raise ValueError("mac must be 6 bytes, got %d" % len(mac))
    crc = EfuseMacField.calc_crc(mac)
    return {0: 0, 1: struct.unpack(">I", mac[2:6])[0], 2: crc << 16 | mac[0] << 8 | mac[1],
            3: 1 << 15 | 1 << 9, 4: 0, 5: 1 << 20, 6: 0}


class Esp32Chip:
    """The registers a host can reach through READ_REG/WRITE_REG, and the flash."""

    def __init__(self, flash, mac, baud=115200):
        self.flash = flash
        self.mac = bytes(mac)
        self.efuse = efuse_words(self.mac)
        self.baud = baud
        self.strap = STRAP_DOWNLOAD
        self.spi = {}  # SPI1 registers written by the host (reset value taken as 0)

    def read_reg(self, addr):
        """The register's value, or None when the model does not hold it."""
        if addr == CHIP_DETECT_MAGIC_REG:
            return MAGIC_VALUE
        if EFUSE_RD_BASE <= addr < EFUSE_RD_BASE + 4 * len(self.efuse) and addr % 4 == 0:
            return self.efuse[(addr - EFUSE_RD_BASE) // 4]
        if addr == APB_CTL_DATE_ADDR:
            return 1 << 31
        if addr == UART_CLKDIV_REG:  # integer part [19:0], fraction [23:20] (TRM UART_CLKDIV_REG)
            div16 = XTAL_HZ * 16 // self.baud
            return (div16 % 16) << 20 | div16 // 16
        if addr == GPIO_STRAP_REG:
            return self.strap
        if SPI_BASE <= addr < SPI_BASE + 0x100:
            return self.spi.get(addr - SPI_BASE, 0)
        return None

    def write_reg(self, addr, value, mask):
        """Store a SPI controller register (running a user command when CMD.USR is set);
        False for any other address or an unknown SPI flash command."""
        if not SPI_BASE <= addr < SPI_BASE + 0x100:
            return False
        off = addr - SPI_BASE
        old = self.spi.get(off, 0)
        self.spi[off] = (old & ~mask | value & mask) & 0xFFFFFFFF
        if off == _SPI_CMD and self.spi[off] & _SPI_CMD_USR:
            ok = self._user_command()
            self.spi[off] &= ~_SPI_CMD_USR  # the controller clears USR when done
            return ok
        return True

    def _user_command(self):
        usr, usr1, usr2 = self.spi.get(_SPI_USR, 0), self.spi.get(_SPI_USR1, 0), self.spi.get(_SPI_USR2, 0)
        if not usr & _USR_COMMAND:
            return False
        cmd = usr2 & 0xFF
        addr = None
        if usr & _USR_ADDR:
            addr_bits = (usr1 >> 26 & 0x3F) + 1
            addr = self.spi.get(_SPI_ADDR, 0) >> (32 - addr_bits)
        read_bits = self.spi.get(_SPI_MISO_DLEN, 0) + 1 if usr & _USR_MISO else 0
        if usr & _USR_MOSI:
            return False  # no modelled command takes data
        got = self.flash.spi_command(cmd, addr, read_bits)
        if got is None:
            return False
        got = got + b"\x00" * (-len(got) % 4)
        for i in range(0, len(got), 4):
            self.spi[_SPI_W0 + i] = struct.unpack_from("<I", got, i)[0]
        return True


def boots_from_flash(flash):
    """(True, None) if an ESP image header is at the bootloader offset, else (False, the
    32-bit word found there) — what the ROM prints as ``invalid header: 0x...``."""
    head = flash.read(BOOTLOADER_OFFSET, 4)
    if head[0] == IMAGE_MAGIC:
        return True, None
    return False, struct.unpack("<I", head)[0]


def fake_firmware_image(payload_bytes=48 * 1024, seed=1):
    """A valid ESP32 app image (written by esptool's own ``ESP32FirmwareImage``: header,
    extended header with chip id 0, one segment, checksum, SHA-256) of about
    ``payload_bytes``, standing in for a MicroPython ``.bin`` in tests. The virtual chip
    never executes it: a valid header at 0x1000 is what lets it "boot"."""
    import random
    import tempfile

    from esptool.bin_image import ELFSection, ESP32FirmwareImage

    rng = random.Random(seed)
    body = bytes(rng.randrange(256) for _ in range(payload_bytes // 2)) + b"\x00" * (payload_bytes // 2)
    image = ESP32FirmwareImage()
    image.entrypoint = 0x40080400
    image.flash_mode = 2  # DIO, as MicroPython's ESP32_GENERIC images
    image.flash_size_freq = 0x20  # 4MB, 40m (esptool ESP32ROM.FLASH_SIZES)
    image.segments = [ELFSection(b".iram0.text", 0x40080000, body, flags=0)]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "image.bin")
        image.save(path)
        with open(path, "rb") as f:
            return f.read()
