"""The serial link: node frames over a UART (USB or RS-485 to the gateway), COBS-framed with
a CRC-32 (``protocol.serial_link``: ``00 COBS(frame + crc32_le(frame)) 00``); acks come back
the same way.

Memory: one buffer, allocated when the link starts, holds each frame as it is built
(``FramedLink``), its CRC behind it, and then the packet written to the UART, COBS-encoded in
place (``protocol.cobs.encode_into``) with its two delimiters: a wake's sends allocate no
block of a frame's size, which a fragmented heap late in a wake may not have in one piece.
Frames of up to ``FRAME_ROOM`` bytes go that way (a reading and a status record take ~0.9 KB, a reading alone ~0.2 KB);
a larger one (a backlog of status records) takes ``protocol.serial_link.encode_packet``'s
path, the same bytes in new objects.
"""

import struct

from protocol import cobs
from protocol.serial_link import CRC_LEN, SerialDecoder, crc32, encode_packet

from .framed import FramedLink

_POLL_MS = 10
FRAME_ROOM = 1024  # bytes of frame (tag included) built and encoded in the link's buffer


class SerialLink(FramedLink):
    def __init__(self, uart, clock, device_id, key, **kw):
        FramedLink.__init__(self, clock, device_id, key, **kw)
        self.uart = uart
        self.decoder = SerialDecoder()
        raw = FRAME_ROOM + CRC_LEN
        # [0x00][COBS overhead][frame][CRC][0x00]: the frame starts far enough in for the
        # encoding, which begins at index 1, never to overtake what it has still to read
        self._frame_buffer(1 + cobs.max_encoded_len(raw) + 1, at=1 + cobs.max_encoded_len(raw) - raw,
                           tail=CRC_LEN + 1)

    def _packet(self, data):
        # the bytes to write: in the link's buffer when ``data`` is the frame built there
        if data is not self._view:
            return encode_packet(data)
        buf, at = self._buf, self._at
        end = at + len(data)
        struct.pack_into("<I", buf, end, crc32(data))
        self._view = None  # encoded over from here on
        w = cobs.encode_into(memoryview(buf)[at:end + CRC_LEN], buf, 1)
        buf[0] = buf[w] = 0  # the delimiters
        return memoryview(buf)[:w + 1]

    def exchange(self, data, boot_epoch, last_seq):
        self.uart.write(self._packet(data))
        clock = self.clock
        deadline = clock.ticks_add(clock.ticks_ms(), self.ack_timeout_ms)
        while clock.ticks_diff(deadline, clock.ticks_ms()) > 0:
            chunk = self.uart.read(256)
            if not chunk:
                clock.sleep_ms(_POLL_MS)
                continue
            for packet in self.decoder.feed(chunk):
                acked = self.check_ack(packet, boot_epoch, last_seq)
                if acked is not None:
                    return acked
        return None
