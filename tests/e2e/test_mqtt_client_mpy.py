"""The node's MQTT client (firmware/app/mqtt.py) under the MicroPython unix port, against a
real Mosquitto started by each test (never a system broker) and a paho-mqtt subscriber.

The node side is NODE below: a small program that publishes numbered messages at QoS 1,
reconnects with ``clean_session=False`` after any link error, republishes what the client
hands back when a session was lost, and prints a JSON summary. Between node and broker a
byte-level TCP proxy can hold PUBACKs, cut the connection or black-hole it, and records
every packet the node sent, so DUP flags and PINGREQs are observed on the wire.

The last tests run the same client under CPython on a ``VirtualClock`` (keep-alive and dead
link decided by virtual time, across a ticks wrap) and against scripted broker bytes over
a socketpair (paths Mosquitto will not take, e.g. a SUBACK failure).
"""

import json
import socket
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from protocol import mqtt_packets as mp
from simulators.broker import Mosquitto, make_test_tls
from simulators.mqtt_proxy import Proxy
from simulators.mpyrun import run_micropython

PW = {"node-1": "n1-c6d1f09a3e57", "gateway": "gw-2f8e4d7a9b10"}
ACL = ["user gateway", "topic readwrite civicedge/#",
       "pattern readwrite civicedge/v1/site/%u/#"]
UP = "civicedge/v1/site/node-1/readings"
DOWN = "civicedge/v1/site/node-1/ack"

NODE = r'''
import sys, json, time, gc, errno
gc.collect()
heap0 = gc.mem_alloc()
from firmware.app.clock import MicroClock
from firmware.app.mqtt import MQTTClient
gc.collect()
heap_import = gc.mem_alloc() - heap0

cfg = json.loads(sys.argv[1])
clock = MicroClock()
got = []
c = MQTTClient("node-1", "127.0.0.1", cfg["port"], clock, user="node-1", password=cfg["password"],
               keepalive_s=cfg.get("keepalive_s", 60), tls=cfg.get("tls"), max_inflight=8,
               timeout_ms=2000, on_message=lambda t, p: got.append([t, p.decode()]))
out = {"connects": [], "errors": [], "requeued": 0}
todo = [b"%d" % i for i in range(cfg.get("n", 0))]
start = clock.ticks_ms()
deadline = clock.ticks_add(start, cfg.get("deadline_ms", 15000))

def left():
    return clock.ticks_diff(deadline, clock.ticks_ms())

def ensure():
    if c.is_connected():
        return
    present = c.connect(clean_session=False)
    back = c.take_requeued()
    out["requeued"] += len(back)
    todo[0:0] = [p for t, p, r in back]
    out["connects"].append(present)

try:
    ensure()
    if cfg.get("sub"):
        c.subscribe(cfg["sub"])
        c.publish(cfg["topic"], b"ready")
    gc.collect()
    heap_connected = gc.mem_alloc() - heap0
    for _ in range(100000):
        if left() <= 0:
            out["errors"].append("deadline")
            break
        idle_done = clock.ticks_diff(clock.ticks_ms(), start) >= cfg.get("idle_ms", 0)
        if not todo and not c.inflight_count() and len(got) >= cfg.get("want", 0) and idle_done:
            break
        try:
            ensure()
            if todo and c.inflight_count() < 8:
                c.publish(cfg["topic"], todo[0])
                todo.pop(0)
                pace_end = clock.ticks_add(clock.ticks_ms(), cfg.get("pace_ms", 0))
                c.poll(0)
                for _ in range(100):  # poll until the pace interval is over
                    wait = clock.ticks_diff(pace_end, clock.ticks_ms())
                    if wait <= 0:
                        break
                    c.poll(wait)
            else:
                c.poll(50)
        except OSError as e:
            out["errors"].append(e.errno)
            c.close()
            time.sleep_ms(100)
    c.disconnect()
except OSError as e:
    out["fatal"] = [type(e).__name__, e.errno, str(e)]
    heap_connected = None
gc.collect()
out.update(counters=c.counters, got=got, inflight=c.inflight_count(), heap_import=heap_import,
           heap_connected=heap_connected, heap_end=gc.mem_alloc() - heap0, todo=len(todo))
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def node_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("node") / "node.py"
    path.write_text(NODE)
    return str(path)


def run_node(script, timeout_s=40, **cfg):
    cfg.setdefault("password", PW["node-1"])
    cfg.setdefault("topic", UP)
    rc, out, err = run_micropython([script, json.dumps(cfg)], sim=False, heapsize="100K", timeout_s=timeout_s)
    assert rc == 0, "node failed (rc %s):\n%s\n%s" % (rc, out, err)
    result = json.loads(out.strip().splitlines()[-1])
    assert cfg["password"] not in out + err  # no secret ever printed
    print("node", {k: v for k, v in result.items() if k != "got"})  # shown when a test fails
    return result


class Subscriber:
    """paho-mqtt (VERSION2 callbacks, REFERENCE §9) as the gateway: counts what arrives."""

    def __init__(self, broker, topic=UP, clean_session=True, reply=None, cafile=None):
        self.messages = []
        self.reply = reply
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-sub",
                             clean_session=clean_session, protocol=mqtt.MQTTv311)
        self.c.username_pw_set("gateway", PW["gateway"])
        if cafile:
            self.c.tls_set(ca_certs=cafile)
        self.c.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.ready.set()
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port, keepalive=5)
        self.c.loop_start()
        assert self.ready.wait(5)

    def _on_message(self, client, userdata, m):
        self.messages.append(m.payload)
        if self.reply and m.payload == b"ready":
            client.publish(*self.reply, qos=1)

    def wait_for(self, n, timeout_s=10):
        end = time.monotonic() + timeout_s
        while len(self.messages) < n and time.monotonic() < end:
            time.sleep(0.02)
        return self.messages

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def broker():
    with Mosquitto(users=PW, acl=ACL) as b:
        yield b


def _wait(cond, timeout_s):
    end = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < end:
        time.sleep(0.02)
    return cond()


def numbers(messages):
    return sorted(int(m) for m in messages if m != b"ready")


def test_qos1_publishes_all_arrive_with_password(broker, node_script):
    sub = Subscriber(broker)
    try:
        r = run_node(node_script, port=broker.port, n=30)
        msgs = sub.wait_for(30)
    finally:
        sub.close()
    assert numbers(msgs) == list(range(30)) and r["errors"] == []
    assert r["counters"]["acked"] == 30 and r["inflight"] == 0
    assert r["heap_end"] < 100 * 1024


def test_wrong_password_is_refused(broker, node_script):
    r = run_node(node_script, port=broker.port, n=1, password="not-the-password")
    name, err, message = r["fatal"]
    assert name == "MQTTRefused" and err == 111  # ECONNREFUSED
    assert "bad user name or password" in message or "not authorized" in message


def test_tls_verified_and_wrong_ca_refused(tmp_path, node_script):
    server = make_test_tls(str(tmp_path))
    (tmp_path / "other").mkdir()
    other = make_test_tls(str(tmp_path / "other"))
    with Mosquitto(users=PW, acl=ACL, tls={"certfile": server["certfile"], "keyfile": server["keyfile"]}) as b:
        sub = Subscriber(b, cafile=server["cafile"])
        try:
            good = run_node(node_script, port=b.port, n=5,
                            tls={"cafile": server["cafile"], "server_hostname": "localhost"})
            ip = run_node(node_script, port=b.port, n=5, tls={"cafile": server["cafile"]})  # 127.0.0.1 SAN
            bad = run_node(node_script, port=b.port, n=5,
                           tls={"cafile": other["cafile"], "server_hostname": "localhost"})
            name = run_node(node_script, port=b.port, n=5,
                            tls={"cafile": server["cafile"], "server_hostname": "gateway.example"})
            msgs = sub.wait_for(10)
            time.sleep(0.2)
        finally:
            sub.close()
        log = b.log_text()
    assert good["errors"] == [] and ip["errors"] == [] and numbers(msgs) == sorted(list(range(5)) * 2)
    for r in (bad, name):
        assert r["fatal"][0] == "MQTTTLSError" and r["counters"]["connects"] == 0
    # no plaintext retry: the broker saw three MQTT sessions (the subscriber and the two
    # good nodes) and only failed TLS handshakes otherwise
    assert log.count("New client connected") == 3


def test_tls_context_without_verification_is_refused(node_script, tmp_path):
    script = tmp_path / "noverify.py"
    script.write_text(
        "import tls\nfrom firmware.app.clock import MicroClock\nfrom firmware.app.mqtt import MQTTClient\n"
        "ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)\nctx.verify_mode = tls.CERT_NONE\n"
        "try:\n    MQTTClient('n', 'h', 8883, MicroClock(), tls=ctx)\n    print('accepted')\n"
        "except ValueError as e:\n    print('refused', e)\n")
    rc, out, err = run_micropython([str(script)], sim=False, heapsize="100K", timeout_s=20)
    assert rc == 0 and out.startswith("refused tls:"), out + err


def test_dropped_socket_unacked_resent_with_dup(broker, node_script):
    # PUBACKs for messages 6.. are held back, the link is cut after the 9th: the broker has
    # 0..8 (and acked them) but the node saw acks for 0..4 or so only.
    proxy = Proxy(broker.port, hold_acks_from=5, cut_at=9)
    sub = Subscriber(broker)
    try:
        r = run_node(node_script, port=proxy.port, n=20)
        msgs = sub.wait_for(20)
        time.sleep(0.2)
    finally:
        sub.close()
        proxy.close()
    assert numbers(set(msgs)) == list(range(20))           # none lost
    pubs = proxy.node_publishes()
    dups = [p for p in pubs if p.dup]
    assert r["connects"][0] is False and True in r["connects"][1:]   # session resumed
    assert len(dups) >= 1 and r["counters"]["resent"] == len(dups)
    originals = {p.payload: p.packet_id for p in pubs if not p.dup}
    # a resend is the same message under the same packet id; some originals reached the
    # broker before the cut (so it gets duplicates), later ones died in the cut socket
    seen = [d for d in dups if d.payload in originals]
    assert seen and all(originals[d.payload] == d.packet_id for d in seen)
    assert len(msgs) - len(set(msgs)) == len(msgs) - 20  # only duplicates beyond the 20


def test_half_open_link_detected_by_keepalive(broker, node_script):
    proxy = Proxy(broker.port, blackhole_at=3)
    sub = Subscriber(broker)
    try:
        r = run_node(node_script, port=proxy.port, n=10, keepalive_s=1, deadline_ms=15000)
        msgs = sub.wait_for(10)
    finally:
        sub.close()
        proxy.close()
    assert numbers(set(msgs)) == list(range(10))
    assert r["counters"]["dead_links"] == 1 and 110 in r["errors"]  # ETIMEDOUT
    assert r["counters"]["pings"] >= 1 and proxy.connections == 2


def test_idle_link_kept_alive_by_pings(broker, node_script):
    proxy = Proxy(broker.port)
    try:
        r = run_node(node_script, port=proxy.port, n=1, keepalive_s=1, idle_ms=2500)
    finally:
        proxy.close()
    pings = [raw for raw in proxy.sent if raw[0] == mp.PINGREQ]
    assert r["errors"] == [] and r["counters"]["dead_links"] == 0
    assert len(pings) == r["counters"]["pings"] >= 2 and proxy.connections == 1
    assert "exceeded timeout" not in broker.log_text()


@pytest.mark.parametrize("kill, persistence", [(False, True), (True, True), (True, False)],
                         ids=["sigterm", "sigkill", "sigkill-no-persistence"])
def test_broker_restarted_mid_stream(node_script, kill, persistence):
    # PUBACKs from the 5th on are held by the proxy, so publishes are in flight when the
    # broker goes down; the proxy's second connection (after the restart) forwards all. The
    # broker goes down once the node's window is full (8 in flight): the node then sends
    # nothing and must notice the closed connection by reading it. Every wait is on an event
    # with a generous bound, never on how fast the node runs; keep-alive 5 s is the backstop
    # (a dead link declared at 7.5 s) if the close were ever lost.
    with Mosquitto(users=PW, acl=ACL, persistence=persistence) as b:
        sub = Subscriber(b, clean_session=False)
        proxy = Proxy(b.port, hold_acks_from=5)
        result = {}
        t = threading.Thread(target=lambda: result.update(
            run_node(node_script, timeout_s=150, port=proxy.port, n=40, pace_ms=20, keepalive_s=5,
                     deadline_ms=120000)))
        t.start()
        try:
            full = _wait(lambda: proxy.publishes - proxy.acks_forwarded >= 8, 60)
            sub.wait_for(8, 30)
            b.restart(kill=kill)   # mid-stream, back on the same port with its database
            t.join(180)
            msgs = sub.wait_for(40, 60)
            time.sleep(0.2)
        finally:
            sub.close()
            proxy.close()
    assert full, "the node never had 8 publishes in flight: %d sent, %d acked" % (proxy.publishes, proxy.acks_forwarded)
    assert not t.is_alive()
    # the node noticed, reconnected, and sent what was in flight again: with DUP when the
    # broker had kept its session, else handed back and republished; all acknowledged
    assert result["errors"] and len(result["connects"]) >= 2
    assert result["counters"]["resent"] + result["requeued"] >= 3
    assert result["counters"]["acked"] == 40 and result["counters"]["published"] == 40 + result["requeued"]
    assert result["inflight"] == 0 and result["todo"] == 0
    if not persistence:  # the session died with the broker: handed back, republished
        assert result["connects"][1] is False and result["requeued"] >= 3
    if not kill:
        assert result["connects"][1] is True                # SIGTERM saved the session
        assert result["counters"]["resent"] >= 3
        assert numbers(set(msgs)) == list(range(40))       # nothing lost end to end
        assert any(p.dup for p in proxy.node_publishes())
    # Under SIGKILL Mosquitto may lose a message it had already PUBACKed: it acks before
    # its autosave writes the database. That is why the node trims its flash log only on
    # the gateway's authenticated ack, never on PUBACK (docs/mqtt-link.md).


def test_subscription_receives_the_gateways_message(broker, node_script):
    sub = Subscriber(broker, reply=(DOWN, b"ack 0-5"))
    try:
        r = run_node(node_script, port=broker.port, n=0, sub=DOWN, want=1)
    finally:
        sub.close()
    assert r["got"] == [[DOWN, "ack 0-5"]] and r["counters"]["received"] == 1
    assert r["errors"] == []


# ---- the same client under CPython on a VirtualClock: keep-alive decided by virtual time ----

def _cpython_client(port, clock, **kw):
    from firmware.app.mqtt import MQTTClient

    kw.setdefault("timeout_ms", 2000)
    return MQTTClient("node-1", "127.0.0.1", port, clock, user="node-1", password=PW["node-1"],
                      keepalive_s=10, **kw)


def _poll_until(c, cond, rounds=50):
    for _ in range(rounds):
        if cond():
            return True
        c.poll(50)
    return cond()


def test_cpython_tls_and_keepalive_across_a_tick_wrap(tmp_path):
    from simulators.clock import VirtualClock

    files = make_test_tls(str(tmp_path))
    clock = VirtualClock(ticks_start_ms=(1 << 30) - 12_000)  # the ticks wrap during the test
    with Mosquitto(users=PW, acl=ACL, tls={"certfile": files["certfile"], "keyfile": files["keyfile"]}) as b:
        c = _cpython_client(b.port, clock, tls={"cafile": files["cafile"], "server_hostname": "localhost"})
        assert c.connect(clean_session=True) is False
        c.publish(UP, b"x")
        assert _poll_until(c, lambda: c.inflight_count() == 0)
        for _ in range(3):  # 30 virtual seconds, idle: a ping each keep-alive, each answered
            clock.advance_s(10)
            handled = c.poll(0)      # sends PINGREQ
            for _ in range(40):
                if handled:
                    break
                handled = c.poll(50)
            assert handled == 1      # the PINGRESP
            clock.advance_s(1)
        assert c.counters["pings"] == 3 and c.counters["dead_links"] == 0 and c.is_connected()
        c.disconnect()


def test_cpython_dead_link_at_one_and_a_half_keepalive(broker):
    from simulators.clock import VirtualClock

    clock = VirtualClock()
    proxy = Proxy(broker.port)
    try:
        c = _cpython_client(proxy.port, clock)
        c.connect(clean_session=True)
        proxy.hole = True            # half-open: the socket stays up, nothing comes back
        clock.advance_s(10)
        c.poll(100)                  # keep-alive due: PINGREQ, no PINGRESP
        assert c.counters["pings"] == 1 and c.is_connected()
        clock.advance_s(4.9)         # 14.9 s since the broker last spoke: still alive
        c.poll(0)
        assert c.is_connected()
        clock.advance_s(0.1)         # 15 s = 1.5 x keepalive
        with pytest.raises(OSError) as e:
            c.poll(0)
        assert e.value.errno == 110 and not c.is_connected() and c.counters["dead_links"] == 1
    finally:
        proxy.close()
    assert [raw[0] for raw in proxy.sent] == [mp.CONNECT, mp.PINGREQ]


def test_cpython_window_bounded_and_requeued_when_session_lost(broker):
    from simulators.clock import VirtualClock

    clock = VirtualClock()
    proxy = Proxy(broker.port, hold_acks_from=0)  # the broker's PUBACKs never arrive
    try:
        c = _cpython_client(proxy.port, clock, max_inflight=3, timeout_ms=300)
        c.connect(clean_session=True)
        for i in range(3):
            c.publish(UP, b"%d" % i)
        with pytest.raises(OSError) as e:  # full window, nothing acked within timeout_ms
            c.publish(UP, b"3")
        assert e.value.errno == 105 and c.inflight_count() == 3  # ENOBUFS
        # a new clean session (the proxy holds only its first connection's PUBACKs): the three
        # are handed back, not resent
        assert c.connect(clean_session=True) is False
        assert c.take_requeued() == [(UP, b"0", False), (UP, b"1", False), (UP, b"2", False)]
        assert c.inflight_count() == 0 and c.counters["resent"] == 0
        c.disconnect()
    finally:
        proxy.close()


def test_decoder_errors_are_the_same_under_micropython(tmp_path):
    # MicroPython's str() accepts UTF-8 surrogates and raises UnicodeError for bad bytes:
    # the decoder must still raise only MQTTProtocolError there, for the same inputs.
    bad = ["30 03 00 01 ff", "30 05 00 03 ed a0 80", "30 03 00 01 00", "36 05 00 01 61 00 01",
           "30 ff ff ff ff 01", "90 03 00 01 03", "20 02 01 04", "42 02 00 01"]
    good = ["3a 09 00 03 61 2f 62 00 0a 68 69", "20 02 01 00", "90 04 00 01 01 80"]
    script = tmp_path / "decode.py"
    script.write_text(
        "import sys, binascii\nfrom protocol import mqtt_packets as mp\n"
        "for h in %r:\n"
        "    try:\n        mp.decode(binascii.unhexlify(h.replace(' ', '')))\n        print('accepted')\n"
        "    except mp.MQTTProtocolError:\n        print('refused')\n"
        "for h in %r:\n"
        "    p = mp.decode(binascii.unhexlify(h.replace(' ', '')))\n"
        "    print(p.kind, p.packet_id, p.topic, p.payload, p.session_present, p.granted)\n" % (bad, good))
    rc, out, err = run_micropython([str(script)], sim=False, heapsize="100K", timeout_s=20)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[:len(bad)] == ["refused"] * len(bad)
    assert lines[len(bad):] == ["3 10 a/b b'hi' False None", "2 0 None b'' True None",
                                "9 1 None b'' False [1, 128]"]


def _scripted(server_bytes, **kw):
    """A client whose "broker" is the far end of a socketpair with these bytes already sent."""
    from simulators.clock import VirtualClock

    ours, theirs = socket.socketpair()
    theirs.sendall(server_bytes)
    c = _cpython_client(0, VirtualClock(), socket_factory=lambda h, p, t: (ours.settimeout(t), ours)[1],
                        timeout_ms=300, **kw)
    return c, theirs


def _client_packets(theirs):
    theirs.settimeout(0.2)
    r = mp.PacketReader(1 << 16)
    try:
        while True:
            data = theirs.recv(4096)
            if not data:
                break
            r.feed(data)
    except (socket.timeout, OSError):
        pass
    out, raw = [], r.next_raw()
    while raw:
        out.append(raw)
        raw = r.next_raw()
    return out


def test_scripted_suback_failure_and_incoming_qos1():
    # Mosquitto 2.0.11 grants a subscription its ACL forbids (and then delivers nothing), so
    # the 0x80 path is checked against scripted broker bytes.
    got = []
    c, theirs = _scripted(mp.encode_connack(False, 0) + mp.encode_suback(1, [0x80])
                          + mp.encode_publish(DOWN, b"ack", 1, 77), on_message=lambda t, p: got.append((t, p)))
    c.connect(clean_session=True)
    with pytest.raises(OSError) as e:
        c.subscribe("civicedge/v1/site/node-2/#")
    assert e.value.errno == 13 and c.is_connected()  # EACCES, link kept
    assert _poll_until(c, lambda: got) and got == [(DOWN, b"ack")]
    sent = _client_packets(theirs)
    assert [k for k, f, b in sent] == [mp.CONNECT, mp.SUBSCRIBE, mp.PUBACK]
    assert sent[2][2] == b"\x00\x4d"  # PUBACK for packet id 77


def test_scripted_garbage_closes_the_link_with_protocol_error():
    c, theirs = _scripted(mp.encode_connack(True, 0))
    assert c.connect() is True
    theirs.sendall(b"\xf0\x00")  # packet type 15 is reserved
    with pytest.raises(mp.MQTTProtocolError):
        c.poll(100)
    assert not c.is_connected()
    c2, _ = _scripted(mp.encode_connack(False, 5))
    with pytest.raises(OSError) as e:
        c2.connect()
    assert type(e.value).__name__ == "MQTTRefused" and e.value.return_code == 5 and not c2.is_connected()


def test_scripted_publishes_built_in_the_lent_buffer_are_encode_publish_bytes():
    # lend(buf): each QoS 1 PUBLISH that fits is built in it (the same bytes encode_publish
    # makes) and it is free again once PUBACKed; one that does not fit, or comes while the
    # buffer is in flight, gets its own. A resend after a kept session carries DUP=1.
    lent = bytearray(300)
    c, theirs = _scripted(mp.encode_connack(False, 0) + mp.encode_puback(1))
    c.connect(clean_session=False)
    c.lend(lent)
    payloads = [bytes(range(200)), memoryview(bytes(range(50, 250)))[:150], bytes(1000), b"x" * 260]
    c.publish(UP, payloads[0])
    assert _poll_until(c, lambda: c.inflight_count() == 0)  # PUBACK 1: the buffer is free
    for p in payloads[1:]:
        c.publish(UP, p)
    assert c.inflight_count() == 3
    sent = _client_packets(theirs)
    want = [mp.encode_publish(UP, bytes(p), 1, i + 1) for i, p in enumerate(payloads)]
    assert [bytes([k << 4 | f]) + mp.encode_remaining_length(len(b)) + b for k, f, b in sent[1:]] == want
    assert bytes(lent[:len(want[1])]) == want[1]  # the second was built in the lent buffer
    c.close()
    ours, theirs = socket.socketpair()
    theirs.sendall(mp.encode_connack(True, 0))
    c.socket_factory = lambda h, p, t: (ours.settimeout(t), ours)[1]
    assert c.connect(clean_session=False) is True and c.counters["resent"] == 3
    resent = _client_packets(theirs)[1:]
    assert [bytes([k << 4 | f]) + mp.encode_remaining_length(len(b)) + b for k, f, b in resent] == [
        bytes([w[0] | 0x08]) + w[1:] for w in want[1:]]  # DUP set, nothing else changed
