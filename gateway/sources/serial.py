"""``SerialSource``: node frames from a serial port (a USB-serial cable or the Pi's UART).

Theory of operation
-------------------
One reader thread opens the port with pyserial (``serial.serial_for_url``, so a device path,
a ``/dev/serial/by-id/...`` link, a pty or a ``loop://`` URL all work) and feeds every byte to
``protocol.serial_link.SerialDecoder`` (``00 | COBS(frame | CRC-32) | 00``). Each complete,
CRC-checked packet is a node frame, handed to the agent as an ``Arrival(FRAME)`` whose
``reply`` writes the pipeline's ack back, framed the same way. Line noise, half packets and
corrupted bytes are counted by kind (``link_errors.crc``, ``.cobs``, ``.oversize``, and
``.truncated`` for a packet cut short by an unplug) and never stop the stream: the decoder
resynchronises at the next 0x00.

Unplug and replug. A read that fails (``SerialException``/``OSError``: the adapter was
pulled, the pty's far end closed) closes the port, counts ``unplugged`` and retries opening
the *same path* with a bounded doubling delay (0.5 s → 5 s by default) until it reappears;
with a ``/dev/serial/by-id/...`` path that is the same adapter whatever ttyUSB number the
kernel gives it next. ``reconnects`` counts every successful open after the first.

Acks. ``reply(ack)`` takes a write lock (waiting at most 0.5 s), writes ``encode_packet(ack)``
with a short write timeout (0.5 s) and counts ``acks_sent`` or ``ack_errors.<why>``; it never
raises. The read and the write share the port object (pyserial allows one reader and one
writer thread); closing it takes the write lock, so no write runs on a closed port.
"""

import threading

from gateway.sources import FRAME, Arrival, RetryDelay, Source, wall_or_none
from protocol import serial_link
from protocol.frame import MAX_FRAME_BYTES

_LINK_KINDS = ("crc", "cobs", "oversize")
_READ_CHUNK = 65536  # at most this much per read call beyond the first byte


def open_pyserial(port, baudrate, read_timeout_s, write_timeout_s):
    """The default port opener: ``serial.serial_for_url`` with the timeouts, and exclusive
    access for a device path (so a second program, e.g. ModemManager, cannot share it)."""
    import serial

    kwargs = {"baudrate": baudrate, "timeout": read_timeout_s, "write_timeout": write_timeout_s}
    if "://" not in port:
        kwargs["exclusive"] = True
    return serial.serial_for_url(port, **kwargs)


def _port_errors():
    import serial

    return (serial.SerialException, OSError, ValueError)


class SerialSource(Source):
    """Node frames from ``cfg.port`` at ``cfg.baudrate`` (a ``gateway.config_types.
    SerialSource``); ``clock`` gives ``received_s``. ``open_port(port, baudrate,
    read_timeout_s, write_timeout_s)`` returns a pyserial-like object (``read``, ``write``,
    ``in_waiting``, ``close``); the default is ``open_pyserial``. ``retry_min_s`` /
    ``retry_max_s`` bound the delay between attempts to reopen a missing port."""

    def __init__(self, cfg, clock, *, open_port=None, read_timeout_s=0.2, write_timeout_s=0.5,
                 retry_min_s=0.5, retry_max_s=5.0, max_frame=MAX_FRAME_BYTES):
        Source.__init__(self, "serial:" + cfg.port, "frames", "bytes", "opens", "reconnects",
                        "unplugged", "open_failures", "acks_sent",
                        *("link_errors." + k for k in _LINK_KINDS + ("truncated",)),
                        *("ack_errors." + k for k in ("encode", "busy", "unplugged", "write")))
        self.port_name = cfg.port
        self.baudrate = cfg.baudrate
        self._clock = clock
        self._open_port = open_port or open_pyserial
        self._read_timeout_s = read_timeout_s
        self._write_timeout_s = write_timeout_s
        self._delay = RetryDelay(retry_min_s, retry_max_s)
        self._max_frame = max_frame
        self._decoder = serial_link.SerialDecoder(max_frame)
        self._link_base = dict.fromkeys(_LINK_KINDS, 0)  # from decoders of earlier opens
        self._port = None
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._detail = "not started"
        self._errors = _port_errors()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, sink):
        if self._thread is not None:
            raise RuntimeError("%s is already started" % self.name)
        self._sink = sink
        self._stop.clear()
        self._detail = "opening %s" % self.port_name
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s=5.0):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if not self._thread.is_alive():
                self._thread = None
        self._close(counted=False)
        self._detail = "stopped"

    def counters(self):
        c = self._counters.snapshot()
        dec = self._decoder.counters
        for k in _LINK_KINDS:
            c["link_errors." + k] = self._link_base[k] + dec[k]
        return c

    def status(self):
        return {"connected": self._port is not None, "detail": self._detail}

    # -- the reader thread --------------------------------------------------------------------
    def _run(self):
        while not self._stop.is_set():
            port = self._try_open()
            if port is None:
                self._stop.wait(self._delay.next())
                continue
            self._delay.reset()
            self._read(port)
            self._close(counted=not self._stop.is_set())

    def _try_open(self):
        try:
            port = self._open_port(self.port_name, self.baudrate, self._read_timeout_s,
                                   self._write_timeout_s)
        except self._errors as e:
            self._counters.inc("open_failures")
            self._detail = ("cannot open %s (%s); retrying: check the cable, that the node is "
                            "powered, and that the path exists (ls -l /dev/serial/by-id/)"
                            % (self.port_name, _why(e)))
            return None
        opens = self._counters.get("opens")
        self._counters.inc("opens")
        if opens:
            self._counters.inc("reconnects")
        with self._write_lock:
            self._port = port
        self._detail = "reading %s at %d baud" % (self.port_name, self.baudrate)
        return port

    def _read(self, port):
        while not self._stop.is_set():
            try:
                data = port.read(1)  # blocks up to read_timeout_s
                if data:
                    more = port.in_waiting
                    if more:
                        data += port.read(min(more, _READ_CHUNK))
            except self._errors as e:
                self._detail = ("%s went away (%s); waiting for it to come back: check the "
                                "cable and the node's power" % (self.port_name, _why(e)))
                return
            if data:
                self._handle(data)

    def _handle(self, data):
        self._counters.inc("bytes", len(data))
        for frame in self._decoder.feed(data):
            self._counters.inc("frames")
            self._emit(Arrival(FRAME, frame, self.name, received_s=wall_or_none(self._clock),
                               reply=self._reply))

    def _close(self, counted):
        with self._write_lock:
            port, self._port = self._port, None
        if port is None:
            return
        if counted:
            self._counters.inc("unplugged")
        try:
            port.close()
        except Exception:  # closing a port that is already gone: nothing left to do
            pass
        # A packet cut off by the unplug is dropped with its decoder; its counts carry on.
        old = self._decoder
        if old.buffered:
            self._counters.inc("link_errors.truncated")
        for k in _LINK_KINDS:
            self._link_base[k] += old.counters[k]
        self._decoder = serial_link.SerialDecoder(self._max_frame)

    # -- acks ---------------------------------------------------------------------------------
    def _reply(self, ack):
        """Write the framed ``ack``; never raises, never waits more than ~1 s (the lock,
        then the write timeout)."""
        try:
            packet = serial_link.encode_packet(bytes(ack))
        except (ValueError, TypeError):
            self._counters.inc("ack_errors.encode")
            return
        if not self._write_lock.acquire(timeout=0.5):
            self._counters.inc("ack_errors.busy")
            return
        try:
            port = self._port
            if port is None:
                self._counters.inc("ack_errors.unplugged")
                return
            port.write(packet)  # bounded by write_timeout_s
            self._counters.inc("acks_sent")
        except Exception:  # SerialTimeoutException, SerialException, OSError: the node resends
            self._counters.inc("ack_errors.write")
        finally:
            self._write_lock.release()


def _why(exc):
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
