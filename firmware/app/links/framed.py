"""``FramedLink``: delivery over a link that carries node frames and authenticated acks.

Theory of operation
-------------------
``deliver(log)`` takes up to ``max_batch_records`` pending records of one boot epoch, oldest
first, encodes them as one SenML-CBOR pack (``protocol.senml``) in one node frame with the
device key's tag (``protocol.frame``), and hands the bytes to ``exchange`` (the subclass:
write to the UART / publish to the broker, then wait for acks). Only an ack that verifies
with the device key, names this boot epoch and no seq beyond what was sent trims the log
(``frame.ack_trims``); anything else is counted (``bad_acks``) and ignored. One frame is in
flight at a time, so a cumulative ack can never trim a frame that was lost. With no good
ack before ``ack_timeout_ms`` the records stay on flash for the next cycle. A batch whose
frame would exceed ``frame.MAX_FRAME_BYTES`` (big status records after an outage) is halved
until it fits; the rest goes in the next frame.
"""

from protocol import frame, senml


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
        self._room = frame.MAX_FRAME_BYTES - len(frame.encode_data(key, device_id, 0, 0, 1, b""))

    def open(self):
        return True

    def _key_for(self, device_id):
        return self._key if device_id == self.device_id else None

    def check_ack(self, buf, boot_epoch, last_seq):
        """The seq an incoming frame acks, or None (counted) if it is not a good ack."""
        try:
            ack = frame.decode_frame(buf, self._key_for, expect=frame.TYPE_ACK)
            return frame.ack_trims(ack, boot_epoch, last_seq)
        except ValueError:
            self.counters["bad_acks"] += 1
            return None

    def exchange(self, data, boot_epoch, last_seq):
        """Send ``data``; return the acked seq or None. Implemented by each link."""
        raise NotImplementedError

    def deliver(self, log):
        delivered = 0
        for _ in range(self.max_batches):
            batch = log.pending(self.max_batch_records)
            if not batch:
                break
            epoch = batch[0][0]
            records = [r for e, r in batch if e == epoch]
            payload = senml.encode_pack(self.device_id, epoch, records)
            while len(payload) > self._room and len(records) > 1:
                records = records[:len(records) // 2]
                payload = senml.encode_pack(self.device_id, epoch, records)
            # count spans the seqs (first..last): seqs may skip, and the ack names seq_through
            span = records[-1]["seq"] - records[0]["seq"] + 1
            data = frame.encode_data(self._key, self.device_id, epoch, records[0]["seq"], span, payload)
            self.feed()
            try:
                acked = self.exchange(data, epoch, records[-1]["seq"])
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
