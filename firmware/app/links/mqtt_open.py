"""The MQTT link's connection step (``app/links/mqtt.py``): the link's constructor (``init``),
WiFi, the backoff, a fresh client, its connection and the ack subscription (``open_link``),
and a kept session's start and end of cycle (``resume``, ``end_cycle``). ``MQTTLink`` loads
this for each of those and releases it after, with the client's connection half, so a node
holds none of it while it samples, logs and sends (heap: docs/mqtt-link.md "Memory"). What
it does is described in the link's module docstring.
Runs on MicroPython; imports on CPython (``network`` only when there is no ``wlan``).
"""

import errno
import os

from .mqtt import FEED_MS, FRAME_ROOM, POLL_MS

BACKOFF_MAX_S = 120  # RELIABILITY.md: jittered backoff 1 -> 120 s
_CLIENT_TIMEOUT_MS = 5000  # socket operations, CONNACK and SUBACK waits
_MAX_INFLIGHT = 4  # one frame is in flight; room for a slow PUBACK or two
_KEEPALIVE_MAX_S = 65535  # CONNECT's keep-alive is 16 bits (MQTT 3.1.1 §3.1.2.10)


def up_topic(device_id):
    return "civicedge/node/%s/up" % device_id


def ack_topic(device_id):
    return "civicedge/node/%s/ack" % device_id


def next_backoff_s(previous_s):
    """The backoff after another failure: 1, 2, 4 … capped at ``BACKOFF_MAX_S`` seconds."""
    return 1 if previous_s <= 0 else min(BACKOFF_MAX_S, previous_s * 2)


def jittered_s(delay_s, r):
    """``delay_s`` scaled to 50–100 % by ``r`` (0..255, random): whole seconds."""
    half = delay_s // 2
    return half + (delay_s - half) * r // 255


def session_keepalive_s(keepalive_s, interval_s, light_sleep):
    """The keep-alive (s) a node announces: the configured one, or on a light-sleep node,
    which stays connected through its sleep, at least 2 x ``interval_s`` (capped at 65535),
    so Mosquitto's 1.5 x keepalive limit is 3 intervals (see the link's module docstring)."""
    if not light_sleep:
        return keepalive_s
    # Not a PINGREQ at the start of each cycle instead: Mosquitto counts the silence from the
    # node's last packet, which is a whole sleep earlier, so with keepalive 60 s and a 120 s
    # interval it would have dropped us (> 90 s) before that ping was sent.
    return max(keepalive_s, min(_KEEPALIVE_MAX_S, interval_s * 2))


def init(link, cfg, secrets, clock, feed=None, wlan=None, root=None):
    """``MQTTLink.__init__``: the link's state from the config and the secrets."""
    m = cfg["link"]["mqtt"]
    link.clock = clock
    link.device_id = cfg["device_id"]
    link._key = secrets.device_key
    link.ack_timeout_ms = m["ack_timeout_ms"]
    link.feed = feed or (lambda: None)
    link._framed = None
    link.wifi = cfg["link"]["wifi"]
    link.mqtt = m
    link._wifi_password = secrets.wifi_password
    link._password = secrets.mqtt_password
    link.up_topic = up_topic(link.device_id)
    link.ack_topic = ack_topic(link.device_id)
    link._tls = None
    if m["tls"]:
        ca = m["ca_file"]
        if root and not ca.startswith("/"):
            ca = root.rstrip("/") + "/" + ca
        link._tls = {"cafile": ca, "server_hostname": m["host"]}
    link._wlan = wlan
    # a light-sleep (mains) node keeps its session between cycles; a deep-sleep one cannot
    link.stay_connected = cfg["power"]["sleep"] == "light"
    link.late_open = not link.stay_connected  # main.py leaves the connecting to deliver()
    link.keepalive_s = session_keepalive_s(m["keepalive_s"], cfg["interval_s"], link.stay_connected)
    link._client = None
    link._inbox = []
    link._failed_in_cycle = False
    link.counters = {"frames_sent": 0, "records_acked": 0, "ack_timeouts": 0, "bad_acks": 0,
                     "link_errors": 0,  # FramedLink's
                     "wifi_fails": 0, "mqtt_fails": 0, "tls_fails": 0, "mqtt_refused": 0, "backoff_skips": 0,
                     "stale_acks": 0, "connects": 0, "backoff_s": 0, "retry_at_s": 0}
    link._buf = None
    if link.late_open:
        tls_context(link)
        # one buffer (``_framer``), made while there is room in one piece: the PUBLISH's header
        # (type, a 2-byte remaining length, the topic's length and bytes, the packet id), then
        # the frame, its pack encoded in place; the PUBLISH is built around the frame there
        link._at = 7 + len(link.up_topic)
        link._buf = bytearray(link._at + FRAME_ROOM)


def _station(link):
    if link._wlan is None:
        import network

        link._wlan = network.WLAN(network.STA_IF)
    return link._wlan


def wifi_up(link):
    """True once the station is associated; the wait is bounded by ``connect_timeout_ms`` on
    the link's clock, feeding the watchdog."""
    wlan = _station(link)
    if not wlan.active():
        wlan.active(True)
    if wlan.isconnected():
        return True
    try:
        wlan.connect(link.wifi["ssid"], link._wifi_password)
    except OSError:  # the ESP32 port can refuse while it is still associating: wait on
        pass
    clock = link.clock
    timeout_ms = link.wifi["connect_timeout_ms"]
    deadline = clock.ticks_add(clock.ticks_ms(), timeout_ms)
    for i in range(timeout_ms // POLL_MS + 1):  # bounded even on a clock nobody advances
        if wlan.isconnected():
            return True
        if clock.ticks_diff(deadline, clock.ticks_ms()) <= 0:
            break
        clock.sleep_ms(POLL_MS)
        if i % (FEED_MS // POLL_MS) == 0:
            link.feed()
    wlan.disconnect()  # stop the radio retrying in the background until the next attempt
    return False


def fail(link, kind):
    """Count ``kind``, set the next backoff, close; returns False."""
    c = link.counters
    c[kind] += 1
    c["backoff_s"] = next_backoff_s(c["backoff_s"])
    c["retry_at_s"] = int(link.clock.wall_s()) + jittered_s(c["backoff_s"], os.urandom(1)[0])
    link.close()
    link._failed_in_cycle = True
    return False


def open_link(link):
    """``MQTTLink.open``'s work: True when connected, False (counted, backoff set) otherwise."""
    if link.is_connected():
        return True
    c = link.counters
    wait_s = c["retry_at_s"] - int(link.clock.wall_s())
    if c["backoff_s"] and 0 < wait_s <= BACKOFF_MAX_S:
        c["backoff_skips"] += 1
        link._failed_in_cycle = True
        return False
    link.feed()
    if not wifi_up(link):
        return fail(link, "wifi_fails")
    from ..mqtt import MQTTClient  # (heap: not loaded with the link, released after connecting)
    from ..mqtt_connect import MQTTRefused, check_topic
    from ..mqtt_tls import MQTTTLSError

    m = link.mqtt
    client = MQTTClient(m["client_id"] or link.device_id, m["host"], m["port"], link.clock,
                        user=m["username"] or link.device_id, password=link._password,
                        keepalive_s=link.keepalive_s, tls=link._tls, max_inflight=_MAX_INFLIGHT,
                        timeout_ms=_CLIENT_TIMEOUT_MS, on_message=link._on_message)
    link._client = client
    link.feed()
    try:
        client.connect(clean_session=False)
        client.take_requeued()  # a fresh client has none; the flash log is the buffer anyway
        client.subscribe(link.ack_topic, 1)
        check_topic(client, link.up_topic)  # here, not at every publish (ValueError: a bad device_id)
    except MQTTTLSError:
        return fail(link, "tls_fails")  # an alarm: wrong CA, host name or dates; never plaintext
    except MQTTRefused:
        return fail(link, "mqtt_refused")  # bad credentials or not authorised
    except OSError as e:
        return fail(link, "mqtt_refused" if e.errno == errno.EACCES else "mqtt_fails")
    except ValueError:  # MQTTProtocolError, or a CA file that does not parse
        return fail(link, "mqtt_fails")
    c["connects"] += 1
    c["backoff_s"] = c["retry_at_s"] = 0
    return True


def tls_context(link):
    """A deep-sleep node's TLS context, made with the link (``init``), before the node samples
    and packs, while the heap still has its 3 KB block in one piece: made at the connection,
    after the pack's modules were loaded and released, it found none (docs/mqtt-link.md
    "Memory"). The connection uses it with ``link.mqtt["host"]`` as the name checked (what
    ``server_hostname`` is). A CA file that is missing or does not parse leaves ``link._tls``
    as it was: the connection fails on it and counts it as before."""
    tls = link._tls
    if isinstance(tls, dict):
        from ..mqtt_tls import make_tls_context
        from ..startup import collect_deep

        collect_deep()
        try:
            link._tls = make_tls_context(tls["cafile"])
        except (OSError, ValueError):
            pass


def resume(link):
    """A kept session at the start of a cycle: WiFi back if the light sleep lost it, then what
    arrived meanwhile into the inbox; a connection the broker closed (restart, keep-alive) or
    a dead one is closed here, and ``deliver()`` reconnects."""
    if not wifi_up(link):
        fail(link, "wifi_fails")
        return
    try:
        link._client.poll(0)
    except (OSError, ValueError):  # ValueError: MQTTProtocolError; the client has closed
        link.close()


def end_cycle(link, published):
    """A kept session at the end of a cycle (see the link's module docstring): a frame not
    PUBACKed means nobody answers there (close); nothing sent this cycle, a PINGREQ, so the
    broker hears from us anyway."""
    client = link._client
    if client is None or not client.is_connected():
        return
    try:
        if client.inflight_count():
            link.close()
        elif client.counters["published"] == published:
            client.ping()
    except OSError:
        link.close()
