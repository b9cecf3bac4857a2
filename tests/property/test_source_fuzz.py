"""Hostile input into the sources: arbitrary bytes on a serial line, arbitrary text as a
ChirpStack event, arbitrary topics and payloads from the site broker. Each is counted and
dropped; nothing raises, the stream resynchronises, and a good frame after the garbage still
arrives intact."""

import json
import time

import paho.mqtt.client as mqtt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config_types import ChirpStackSource as ChirpCfg
from gateway.config_types import MQTTConnection
from gateway.config_types import SerialSource as SerialCfg
from gateway.sources.chirpstack import REASONS, ChirpStackSource, EventError, parse_up_event
from gateway.sources.serial import SerialSource
from gateway.sources.site_mqtt import SiteMQTTSource
from protocol import frame, serial_link
from protocol.frame import MAX_FRAME_BYTES
from simulators.clock import VirtualClock

KEY = bytes(range(16, 48))
GOOD = frame.encode_data(KEY, "node-1", 1, 0, 1, b"\xa0")


class ScriptedPort:
    """A port whose line delivers ``chunks`` then goes away (an unplug): byte-level."""

    def __init__(self, chunks):
        self.chunks = [bytes(c) for c in chunks if c]
        self.written = []

    @property
    def in_waiting(self):
        return len(self.chunks[0]) if self.chunks else 0

    def read(self, n):
        if not self.chunks:
            raise OSError(5, "Input/output error")
        head = self.chunks[0]
        out, rest = head[:n], head[n:]
        if rest:
            self.chunks[0] = rest
        else:
            self.chunks.pop(0)
        return out

    def write(self, data):
        self.written.append(bytes(data))
        return len(data)

    def close(self):
        pass


def run_serial(chunks):
    port = ScriptedPort(chunks)
    opened = []

    def open_port(*args):
        if opened:
            raise OSError(2, "No such file or directory")
        opened.append(1)
        return port

    got = []
    src = SerialSource(SerialCfg("/dev/serial/by-id/usb-test", 115200), VirtualClock(),
                       open_port=open_port, retry_min_s=0.01, retry_max_s=0.01)
    src.start(lambda a: got.append(a) or True)
    end = time.monotonic() + 10
    while src.counters()["unplugged"] < 1 and time.monotonic() < end:
        time.sleep(0.002)
    src.stop()
    return src, got


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=600), max_size=12))
def test_arbitrary_bytes_on_the_line_are_counted_and_resynchronised(chunks):
    tail = serial_link.encode_packet(GOOD)
    src, got = run_serial(chunks + [tail])
    c = src.counters()
    assert c["unplugged"] == 1
    assert c["bytes"] == sum(len(x) for x in chunks) + len(tail)
    assert got and got[-1].data == GOOD  # the leading 0x00 closed off whatever came before
    assert all(0 < len(a.data) <= MAX_FRAME_BYTES for a in got)
    assert c["frames"] == len(got)
    for a in got:
        a.reply(GOOD)  # the port is gone: counted, never raised
    assert src.counters()["ack_errors.unplugged"] == len(got)


def conn():
    return MQTTConnection(host="127.0.0.1", port=1, tls=False, tls_verify=True, ca_file=None,
                          client_cert_file=None, client_key_file=None, username="gateway",
                          password_file=None, client_id="fuzz", keepalive_s=10)


def message(topic, payload):
    m = mqtt.MQTTMessage(topic=topic.encode())
    m.payload = payload
    return m


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
_json = st.recursive(_scalars,
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
                         st.sampled_from(["deduplicationId", "time", "deviceInfo", "devEui", "fPort",
                                          "data", "fCnt", "rxInfo", "object"]) | st.text(max_size=8),
                         kids, max_size=5),
                     max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                 _json.map(lambda o: json.dumps(o).encode())))
def test_arbitrary_chirpstack_events_raise_only_event_error(payload):
    try:
        up = parse_up_event(payload)
    except EventError as e:
        assert e.reason in REASONS
    else:
        assert len(up.dev_eui) == 16 and 0 < len(up.data) <= 255 and up.f_port == 2


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.binary(max_size=300))
def test_the_mqtt_handlers_count_whatever_arrives(topic, payload):
    got = []
    cs = ChirpStackSource(ChirpCfg(conn(), "+"), "pw", VirtualClock())
    site = SiteMQTTSource(conn(), "pw", ["node-1"], VirtualClock())
    for src in (cs, site):
        src._sink = lambda a: got.append(a) or True
        src._on_message(src.client, None, message(topic, payload))
        src._on_message(src.client, None, message("civicedge/node/node-1/up", payload))
        src._on_message(src.client, None,
                        message("application/x/device/0101010101010101/event/up", payload))
    c1, c2 = cs.counters(), site.counters()
    assert c1["handler_errors"] == c2["handler_errors"] == 0
    dropped = sum(v for k, v in c1.items() if k.startswith("dropped."))
    assert c1["messages"] == c1["uplinks"] + dropped == 3
    assert c2["messages"] == 3
    assert c2["frames"] + c2["bad_topic"] + c2["unknown_device"] + c2["oversize"] + c2["empty"] == 3
    assert len(got) == c1["uplinks"] + c2["frames"]
