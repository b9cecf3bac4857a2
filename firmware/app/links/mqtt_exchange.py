"""The MQTT link's exchange (``MQTTLink.exchange``, ``app/links/mqtt.py``): publish one frame
and wait for the gateway's authenticated ack, which arrives on the ack topic into the link's
inbox. The link loads this for each exchange and releases it after, with the client's
every-wake half (``app.mqtt_io``), ``protocol.mqtt_wire`` and the ack's half of the frame
code (``protocol.frame_ack_core``), so a node does not hold them while it logs and packs its
frames (heap: docs/mqtt-link.md "Memory"). What it does is described in the link's module
docstring. Runs on MicroPython; imports on CPython.
"""

import errno
import struct
import sys

from .mqtt import FEED_MS, INBOX, POLL_MS


def _ack_decoder():
    # protocol.frame_ack_core's decode_ack, released with the exchange (mqtt._PROTOCOL): taken
    # from sys.modules while a node keeps it (an import statement of a dotted name interns
    # each of its parts again, ~10,000 instructions each on MicroPython)
    core = sys.modules.get("protocol.frame_ack_core")
    if core is None:
        from protocol import frame_ack_core as core
    return core.decode_ack


def take_ack(link, boot_epoch, first, last_seq):
    """The seq an ack in ``link``'s inbox lets it trim through, or None. Authentic acks for
    records already trimmed (another epoch, or below this frame) are stale, not forged
    (``stale_acks``); anything else that is not a good ack is counted in ``bad_acks``."""
    if not link._inbox:  # (the usual case before the publish: no decoder loaded for it)
        return None
    decode_ack = _ack_decoder()

    def key_for(device_id):
        return link._key if device_id == link.device_id else None

    c = link.counters
    while link._inbox:
        try:
            ack = decode_ack(link._inbox.pop(0), key_for)
        except ValueError:
            c["bad_acks"] += 1
            continue
        if ack.boot_epoch != boot_epoch or ack.seq_through < first:
            c["stale_acks"] += 1
        elif ack.seq_through > last_seq:
            c["bad_acks"] += 1  # acks what was never sent: never trim on it
        else:
            return ack.seq_through
    return None


def exchange(link, data, boot_epoch, last_seq):
    """``MQTTLink.exchange``: the seq acked, or None after ``ack_timeout_ms``; ``OSError``
    when the connection is lost (or the broker sent malformed bytes: ``EIO``)."""
    client = link._client
    if client is None or not client.is_connected():
        raise OSError(errno.ENOTCONN, "MQTT link not connected")
    # the frame's first seq, read at its offset (protocol/frame_core.encode_data_into's layout:
    # version, type, id length, id, boot_epoch, first_seq). Not through a frame_core function:
    # that one-line move made the MQTT node's least heap on the 32-bit port 107 KB, not 100
    # (simulators/bench_heap_mqtt.py; the heap is chaotic near its limit).
    first = struct.unpack_from(">I", data, 7 + data[2])[0]
    acked = take_ack(link, boot_epoch, first, last_seq)  # queued while we slept
    if acked is not None:
        return acked
    clock = link.clock
    try:
        client.publish(link.up_topic, data)
        deadline = clock.ticks_add(clock.ticks_ms(), link.ack_timeout_ms)
        fed = clock.ticks_ms()
        for _ in range(link.ack_timeout_ms // POLL_MS + INBOX):  # + polls cut short by packets
            left = clock.ticks_diff(deadline, clock.ticks_ms())
            if left <= 0:
                break
            client.poll(min(left, POLL_MS))
            acked = take_ack(link, boot_epoch, first, last_seq)
            if acked is not None:
                return acked
            if clock.ticks_diff(clock.ticks_ms(), fed) >= FEED_MS:
                link.feed()
                fed = clock.ticks_ms()
    except ValueError as e:  # MQTTProtocolError (its class reloaded with mqtt_wire): the client closed
        raise OSError(errno.EIO, "MQTT protocol error: %s" % e)
    return None


def send(link, log, built):
    """A deep-sleep node's frame, built before it connected (``MQTTLink.deliver``): exchange
    ``built`` (``FramedLink.next_frame``'s tuple) and trim what its ack covers, counted as
    ``FramedLink.deliver`` counts. ``(records acked, whether to build the next frame)``;
    ``(0, False)`` when the wake's delivery stops here (connection lost, or no ack)."""
    data, epoch, last, more = built
    c = link.counters
    link.feed()
    try:
        # the PUBLISH is built around the frame, in the link's buffer, where the frame was built
        # after room for the PUBLISH's header (heap: no block of a frame's size at the exchange)
        link._client.lend(link._buf, link._at)
        acked = exchange(link, data, epoch, last)
    except OSError:
        c["link_errors"] += 1
        return 0, False
    c["frames_sent"] += 1
    if acked is None:
        c["ack_timeouts"] += 1
        return 0, False
    n = log.ack_through(epoch, acked)
    c["records_acked"] += n
    return n, more or acked < last
