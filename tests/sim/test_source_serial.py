"""The serial source on a real pty standing for a USB-serial adapter: real node frames (SenML
pack in an authenticated frame, COBS + CRC-32 on the line) in, Arrivals out; the pipeline's
ack goes back framed; line noise is counted and resynchronised; unplug (the pty closed, its
/dev/serial/by-id link gone) and replug (a new pty behind the same link) are survived."""

import os
import select
import threading
import time
import tty

import pytest

from gateway.config_types import SerialSource as SerialCfg
from gateway.pipeline import Ingest
from gateway.sources import FRAME
from gateway.sources.serial import SerialSource
from protocol import frame, senml, serial_link
from simulators.clock import VirtualClock
from tests.gatewaykit import wait_until

DEV = "sch1-rm12-co2"
KEY = bytes(range(100, 132))


def node_frame(epoch, first, n=1):
    records = [{"seq": first + i, "t": 1767571200 + 120 * (first + i),
                "values": [["co2_ppm", 600 + i, "ok"], ["temperature_c", 21.5, "ok"]]}
               for i in range(n)]
    return frame.encode_data(KEY, DEV, epoch, first, n, senml.encode_pack(DEV, epoch, records))


class Collector:
    def __init__(self, accept=True):
        self.arrivals = []
        self.accept = accept
        self.lock = threading.Lock()

    def __call__(self, arrival):
        with self.lock:
            if not self.accept:
                return False
            self.arrivals.append(arrival)
            return True

    def data(self):
        with self.lock:
            return [a.data for a in self.arrivals]


class FakeAdapter:
    """A pty whose slave is reached through a by-id style symlink, like a USB adapter."""

    def __init__(self, link):
        self.link = str(link)
        self.master = None
        self.plugged = False

    def plug(self):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        os.symlink(os.ttyname(slave), self.link)
        os.close(slave)  # the source opens its own; the master keeps the pty alive
        self.plugged = True

    def unplug(self):
        os.unlink(self.link)
        os.close(self.master)
        self.plugged = False

    def write(self, data):
        os.write(self.master, data)

    def read_packets(self, want=1, timeout_s=5.0):
        dec = serial_link.SerialDecoder()
        got = []
        end = time.monotonic() + timeout_s
        while len(got) < want and time.monotonic() < end:
            r, _, _ = select.select([self.master], [], [], 0.05)
            if r:
                got += dec.feed(os.read(self.master, 4096))
        return got

    def close(self):
        if self.plugged:
            self.unplug()


@pytest.fixture
def adapter(tmp_path):
    a = FakeAdapter(tmp_path / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0")
    yield a
    a.close()


def make_source(adapter, **kw):
    kw.setdefault("retry_min_s", 0.02)
    kw.setdefault("retry_max_s", 0.1)
    return SerialSource(SerialCfg(adapter.link, 115200), VirtualClock(), **kw)


def test_frames_arrive_and_the_ack_goes_back_framed(adapter):
    adapter.plug()
    src, sink = make_source(adapter), Collector()
    src.start(sink)
    try:
        assert wait_until(lambda: src.status()["connected"])
        f1, f2 = node_frame(3, 0, 2), node_frame(3, 2, 1)
        adapter.write(serial_link.encode_packet(f1) + serial_link.encode_packet(f2))
        assert wait_until(lambda: len(sink.arrivals) == 2)
        a = sink.arrivals[0]
        assert sink.data() == [f1, f2]
        assert a.kind == FRAME and a.source == "serial:" + adapter.link and a.device_id is None
        assert a.received_s == VirtualClock().wall_s()
        # the real pipeline makes the ack; reply writes it back, framed like the node's frames
        res = Ingest({DEV: KEY}).ingest_frame(a.data, a.source)
        assert res.accepted and res.ack
        a.reply(res.ack)
        packets = adapter.read_packets(1)
        assert packets == [res.ack]
        ack = frame.decode_frame(packets[0], {DEV: KEY}.get, expect=frame.TYPE_ACK)
        assert (ack.device_id, ack.boot_epoch, ack.seq_through) == (DEV, 3, 1)
        c = src.counters()
        assert c["frames"] == 2 and c["acks_sent"] == 1
        assert not any(v for k, v in c.items() if k.startswith("ack_errors."))
        assert c["bytes"] == len(serial_link.encode_packet(f1) + serial_link.encode_packet(f2))
        assert "reading" in src.status()["detail"]
    finally:
        src.stop()
    assert src.status() == {"connected": False, "detail": "stopped"}


def test_line_noise_is_counted_and_the_stream_resynchronises(adapter):
    adapter.plug()
    src, sink = make_source(adapter), Collector()
    src.start(sink)
    try:
        assert wait_until(lambda: src.status()["connected"])
        frames = [node_frame(1, i) for i in range(3)]
        good = serial_link.encode_packet(frames[0])
        corrupt = bytearray(serial_link.encode_packet(frames[1]))
        corrupt[5] ^= 0x40  # one flipped bit on the line: the CRC catches it
        adapter.write(b"\xff\x13boot noise \x01\x02\x00")      # a boot glitch before the first
        adapter.write(good[:-5])                              # half a packet, cut off...
        adapter.write(bytes(corrupt))                         # ...by the next one's leading 0x00
        adapter.write(b"\x01" * 6000 + b"\x00")               # a runaway packet: oversize
        for f in frames:
            adapter.write(serial_link.encode_packet(f))
        assert wait_until(lambda: len(sink.arrivals) == 3)
        assert sink.data() == frames
        c = src.counters()
        assert c["link_errors.oversize"] == 1
        assert c["link_errors.crc"] + c["link_errors.cobs"] >= 3
        assert c["frames"] == 3
    finally:
        src.stop()


def test_unplug_and_replug_on_the_same_by_id_path(adapter):
    adapter.plug()
    src, sink = make_source(adapter), Collector()
    src.start(sink)
    try:
        assert wait_until(lambda: src.status()["connected"])
        adapter.write(serial_link.encode_packet(node_frame(5, 0)))
        assert wait_until(lambda: len(sink.arrivals) == 1)
        first = src.counters()["bytes"]
        adapter.write(serial_link.encode_packet(node_frame(5, 1))[:9])  # cut off mid-packet
        assert wait_until(lambda: src.counters()["bytes"] == first + 9)
        adapter.unplug()
        assert wait_until(lambda: src.counters()["unplugged"] == 1)
        assert wait_until(lambda: src.counters()["open_failures"] >= 1)
        st = src.status()
        assert st["connected"] is False and adapter.link in st["detail"]
        sink.arrivals[0].reply(frame.encode_ack(KEY, DEV, 5, 0))  # the ack has nowhere to go
        assert src.counters()["ack_errors.unplugged"] == 1
        adapter.plug()  # a new pty (another /dev/pts number) behind the same link
        assert wait_until(lambda: src.counters()["reconnects"] == 1)
        assert wait_until(lambda: src.status()["connected"])
        f = node_frame(5, 1)
        adapter.write(serial_link.encode_packet(f))
        assert wait_until(lambda: len(sink.arrivals) == 2)
        assert sink.arrivals[1].data == f
        ack = frame.encode_ack(KEY, DEV, 5, 1)
        sink.arrivals[1].reply(ack)
        assert adapter.read_packets(1) == [ack]
        c = src.counters()
        assert c["opens"] == 2 and c["link_errors.truncated"] == 1 and c["acks_sent"] == 1
    finally:
        src.stop()


def test_a_port_missing_at_start_is_waited_for(adapter):
    src, sink = make_source(adapter), Collector()
    src.start(sink)
    try:
        assert wait_until(lambda: src.counters()["open_failures"] >= 2)
        assert src.status()["connected"] is False
        assert "cannot open" in src.status()["detail"]
        adapter.plug()
        assert wait_until(lambda: src.status()["connected"])
        adapter.write(serial_link.encode_packet(node_frame(1, 0)))
        assert wait_until(lambda: len(sink.arrivals) == 1)
        assert src.counters()["reconnects"] == 0  # the first open is not a reconnect
    finally:
        src.stop()


def test_a_full_agent_queue_is_counted_as_overflow_and_the_stream_goes_on(adapter):
    adapter.plug()
    sink = Collector(accept=False)
    src = make_source(adapter)
    src.start(sink)
    try:
        assert wait_until(lambda: src.status()["connected"])
        adapter.write(serial_link.encode_packet(node_frame(1, 0)))
        assert wait_until(lambda: src.counters()["overflow"] == 1)
        sink.accept = True
        f = node_frame(1, 0)  # the node resends: nothing was acked
        adapter.write(serial_link.encode_packet(f))
        assert wait_until(lambda: len(sink.arrivals) == 1)
        assert sink.data() == [f] and src.counters()["arrivals"] == 1
    finally:
        src.stop()


def test_loop_url_and_bad_acks_never_raise():
    src = SerialSource(SerialCfg("loop://", 115200), VirtualClock())
    sink = Collector()
    src.start(sink)
    try:
        assert wait_until(lambda: src.status()["connected"])
        # loop:// sends what is written back: the reply's framing arrives as one frame
        src._reply(b"\x01\x02\x00\x03")
        assert wait_until(lambda: len(sink.arrivals) == 1)
        assert sink.data() == [b"\x01\x02\x00\x03"]
        sink.arrivals[0].reply(b"")            # not a frame: counted, not raised
        sink.arrivals[0].reply(b"x" * 5000)    # too long for the link
        c = src.counters()
        assert c["ack_errors.encode"] == 2 and c["acks_sent"] == 1
    finally:
        src.stop(timeout_s=2.0)
    assert not src._thread
