"""The MQTT link's connection step (``app/links/mqtt.py``): WiFi, the backoff, a fresh client,
its connection and the ack subscription. ``MQTTLink.open`` (and, on a light-sleep node, the
WiFi check at the start of each cycle) loads this and releases it after, with the client's
connection half, so a node holds none of it while it samples, logs and sends (heap:
docs/mqtt-link.md "Memory"). What it does is described in the link's module docstring.
Runs on MicroPython; imports on CPython (``network`` only when there is no ``wlan``).
"""

import errno
import os

from ..mqtt import MQTTClient, MQTTRefused
from ..mqtt_tls import MQTTTLSError
from .mqtt import _FEED_MS, _POLL_MS, _PUBLISH_ROOM, BACKOFF_MAX_S, jittered_s, next_backoff_s

_CLIENT_TIMEOUT_MS = 5000  # socket operations, CONNACK and SUBACK waits
_MAX_INFLIGHT = 4  # one frame is in flight; room for a slow PUBACK or two


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
    for i in range(timeout_ms // _POLL_MS + 1):  # bounded even on a clock nobody advances
        if wlan.isconnected():
            return True
        if clock.ticks_diff(deadline, clock.ticks_ms()) <= 0:
            break
        clock.sleep_ms(_POLL_MS)
        if i % (_FEED_MS // _POLL_MS) == 0:
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
    if link._publish_buf is None:  # the PUBLISH buffer, once (the frame's: ``_framer``)
        link._publish_buf = bytearray(_PUBLISH_ROOM)
    client.lend(link._publish_buf)
    return True
