"""The serial link: node frames over a UART (USB or RS-485 to the gateway), COBS-framed with
a CRC-32 (``protocol.serial_link``); acks come back the same way."""

from protocol.serial_link import SerialDecoder, encode_packet

from .framed import FramedLink

_POLL_MS = 10


class SerialLink(FramedLink):
    def __init__(self, uart, clock, device_id, key, **kw):
        FramedLink.__init__(self, clock, device_id, key, **kw)
        self.uart = uart
        self.decoder = SerialDecoder()

    def exchange(self, data, boot_epoch, last_seq):
        self.uart.write(encode_packet(data))
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
