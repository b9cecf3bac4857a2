"""``FramedLink``: delivery over a link that carries node frames and authenticated acks.

Theory of operation
-------------------
``deliver(log)`` takes up to ``max_batch_records`` pending records of one boot epoch, oldest
first, encodes them as one SenML-CBOR pack (``protocol.senml``) in one node frame with the
device key's tag (``protocol.frame``; a node imports only their ``_core`` parts, which hold
what it uses), and hands the bytes to ``exchange`` (the subclass: write to the UART / publish
to the broker, then wait for acks). Only an ack that verifies
with the device key, names this boot epoch and no seq beyond what was sent trims the log
(``ack_trims``; a node loads that half, ``protocol.frame_ack_core``, only to check an ack);
anything else is counted (``bad_acks``) and ignored. One frame is in flight at a time, so a
cumulative ack can never trim a frame that was lost. With no good ack before
``ack_timeout_ms`` the records stay on flash for the next cycle. A batch whose
frame would exceed ``frame.MAX_FRAME_BYTES`` (big status records after an outage) is halved
until it fits; the rest goes in the next frame.

Memory: late in a wake a node's ~100 KB heap can have 20 KB free and no 1 KB in one piece,
which the SenML pack (grown a few bytes at a time), the frame, their copies and the link's
encodings each needed. So a link may give ``FramedLink`` buffers, allocated once when the link
starts (``_frame_buffer``): the pack is encoded into one (the bytes of ``senml.encode_pack``,
cleared and refilled, its capacity kept), and every frame that fits in the other is built
there (``frame.encode_data_into``) and handed to ``exchange`` as a memoryview of it, valid until
the next frame. A larger frame (a backlog of big status records) is built in a new bytearray.
Or one buffer (``in_place``, the MQTT link's): the pack is encoded in it after room for the
frame's header, and the header and tag are written around it (``frame.seal_data_into``), so
the node holds one frame-sized buffer, not two; that buffer grows for a larger frame.
``next_frame`` is the pack half of ``deliver`` alone (the MQTT link's deep-sleep node builds its
frame with it before it connects, docs/mqtt-link.md "Memory").
"""

from drivers import release
from protocol import cbor
from protocol import frame_core as frame  # the node's encoding half of protocol.frame
from protocol import senml_core as senml  # the node's part of protocol.senml


class FramedLink:
    def __init__(self, clock, device_id, key, ack_timeout_ms=2000, max_batch_records=16, max_batches=8,
                 feed=None):
        self.clock = clock
        self.device_id = device_id
        self._key = key
        self.ack_timeout_ms = ack_timeout_ms
        self.max_batch_records = max_batch_records
        self.max_batches = max_batches
        self.feed = feed or (lambda: None)
        self.counters = {"frames_sent": 0, "records_acked": 0, "ack_timeouts": 0, "bad_acks": 0,
                         "link_errors": 0}
        # header + tag: what a frame adds to its payload (the payload may take the rest)
        # (one empty frame is encoded first, so a bad key or device_id fails here)
        frame.encode_data_into(bytearray(frame.data_frame_len(frame.check_device_id(device_id), 0)), 0,
                               key, device_id, 0, 0, 1, b"")
        self._room = frame.MAX_FRAME_BYTES - frame.data_frame_len(device_id, 0)
        self._head = frame.data_frame_len(device_id, 0, 0)  # a frame's bytes before its payload
        self._buf = None  # frames are built here when they fit (``_frame_buffer``)
        self._at = self._tail = 0
        self._view = None  # the last frame built in ``_buf``
        self._pack = None  # the SenML pack's buffer

    def _frame_buffer(self, size, at=0, tail=0, in_place=False):
        """Allocate the buffers: the one frames are built in, ``size`` bytes, each frame
        written from index ``at`` with ``tail`` bytes left free after it (for the link's own
        use), and the pack's, as much as such a frame's payload can be. ``in_place`` (``tail``
        0): one buffer, the pack encoded in it after room for the frame's header, which is
        then written around it (``frame.seal_data_into``); the buffer grows if a frame needs
        more. The links' ``_pack is _buf`` means in place."""
        self._buf = bytearray(size)
        self._at, self._tail = at, tail
        self._pack = self._buf if in_place else bytearray(size - at - tail)

    def _encode_pack(self, epoch, records):
        # senml.encode_pack's bytes in the pack buffer (it grows if a pack needs more, and stays
        # so), from index ``at`` + the frame's header when that is the frame's buffer (in place),
        # else from 0; returns the pack's length. One pass over the SenML records: the array's
        # head, whose count is known only at the end, is written then, in the byte kept for it
        # (a pack of 24 records or more takes a longer head: the records are moved up). Not a
        # list of the SenML records (heap), nor a first pass to count them (each pass validates
        # and builds every record again).
        # (Written out here, not senml.encode_pack_into: through that call the MQTT node's least
        # heap on the 32-bit port, plain MQTT (simulators/bench_heap_mqtt.py), was 107 KB, not 100.)
        buf = self._pack
        if buf is None:
            buf = self._pack = bytearray()
        p0 = self._at + self._head if buf is self._buf else 0
        self._view = None  # (CPython: a buffer with a view of it cannot be resized)
        buf[p0:] = b""  # the header's room left, the rest emptied, its capacity kept
        buf.append(0)  # the array's head's first byte
        n = 0
        for rec in senml.pack_records(self.device_id, epoch, records):
            cbor.encode_into(buf, rec)
            n += 1
        head = bytearray()
        cbor.encode_head(head, 4, n)
        buf[p0:p0 + 1] = head
        return len(buf) - p0

    def _frame(self, epoch, first, span, payload):
        # the data frame: a view of the link's buffer when it fits there, else a new bytearray
        buf, at = self._buf, self._at
        if buf is not None and at + frame.data_frame_len(self.device_id, len(payload)) + self._tail <= len(buf):
            end = frame.encode_data_into(buf, at, self._key, self.device_id, epoch, first, span, payload)
            self._view = memoryview(buf)[at:end]
            return self._view
        self._view = None
        big = bytearray(frame.data_frame_len(self.device_id, len(payload)))
        frame.encode_data_into(big, 0, self._key, self.device_id, epoch, first, span, payload)
        return big

    def _sealed(self, epoch, first, span, n):
        # the data frame around the ``n``-byte pack encoded in place: a view of the link's buffer
        buf, at = self._buf, self._at
        end = frame.seal_data_into(buf, at, self._key, self.device_id, epoch, first, span, n)
        self._view = memoryview(buf)[at:end]
        return self._view

    def open(self):
        return True

    def _key_for(self, device_id):
        return self._key if device_id == self.device_id else None

    def check_ack(self, buf, boot_epoch, last_seq):
        """The seq an incoming frame acks, or None (counted) if it is not a good ack. The ack's
        code (``protocol.frame_ack_core``) is loaded for the check and released after it, so a
        node does not hold it while it logs and packs (``drivers.release``)."""
        try:
            from protocol import frame_ack_core as ack_core

            ack = ack_core.decode_ack(buf, self._key_for)
            return ack_core.ack_trims(ack, boot_epoch, last_seq)
        except ValueError:
            self.counters["bad_acks"] += 1
            return None
        finally:
            release("protocol.frame_ack_core")

    def exchange(self, data, boot_epoch, last_seq):
        """Send ``data``; return the acked seq or None. Implemented by each link."""
        raise NotImplementedError

    def next_frame(self, log):
        """The next frame of what is pending, built but not sent: ``(data, boot_epoch, last_seq,
        more)``, or None when nothing is pending. Up to ``max_batch_records`` records of one boot
        epoch, halved until the frame fits; ``more``: records may be left after it (a full
        batch, another epoch's, or halved). ``data`` is valid until the next frame is built."""
        batch = log.pending(self.max_batch_records)
        if not batch:
            return None
        epoch = batch[0][0]
        records = [r for e, r in batch if e == epoch]
        more = len(batch) >= self.max_batch_records or len(records) < len(batch)
        batch = None  # (heap) each reference dropped once it has served
        n = self._encode_pack(epoch, records)
        while n > self._room and len(records) > 1:
            records = records[:len(records) // 2]
            n = self._encode_pack(epoch, records)
            more = True
        first, last = records[0]["seq"], records[-1]["seq"]
        records = None
        # count spans the seqs (first..last): seqs may skip, and the ack names seq_through
        span = last - first + 1
        if self._pack is self._buf:
            return self._sealed(epoch, first, span, n), epoch, last, more
        return self._frame(epoch, first, span, self._pack), epoch, last, more

    def deliver(self, log):
        delivered = 0
        for _ in range(self.max_batches):
            built = self.next_frame(log)
            if built is None:
                break
            data, epoch, last, _ = built
            built = None
            self.feed()
            try:
                acked = self.exchange(data, epoch, last)
                data = None  # (CPython: no view left of a buffer the next pack resizes)
            except OSError:
                self.counters["link_errors"] += 1
                break
            self.counters["frames_sent"] += 1
            if acked is None:
                self.counters["ack_timeouts"] += 1
                break
            n = log.ack_through(epoch, acked)
            self.counters["records_acked"] += n
            delivered += n
        return delivered
