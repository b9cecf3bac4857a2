"""MQTTForwarder's PUBACK timeout (``upstream.mqtt.puback_timeout_s``) against a real Mosquitto.

Between the forwarder and the broker: a ``TCPProxy`` (simulators/tcpproxy.py), which refuses
new connections while the test looks at the state after the timeout, then the packet-level
proxy of tests/e2e/test_mqtt_client_mpy.py, which on the first connection passes every packet
but swallows the broker's PUBACKs once the forwarder has sent its status message: a broker
that takes the publishes (the platform gets them) and answers PINGREQs, but never PUBACKs.
Waits are bounded and on observable state; nothing asserts on timing.
"""

import dataclasses

import pytest

from protocol import mqtt_packets as mp
from simulators.broker import Mosquitto, mosquitto_available
from simulators.mqtt_proxy import Proxy
from simulators.tcpproxy import TCPProxy
from tests.sim.test_forward_mqtt import (  # noqa: F401 (outbox: a fixture)
    ACL, PW, Platform, fill, forwarder, outbox, rows_stored, stored_keys, upstream_cfg,
    wait_until)

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")


class At:
    """Where the forwarder connects (what ``upstream_cfg`` reads of a broker)."""

    def __init__(self, host, port):
        self.host, self.port = host, port


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_no_puback_times_out_is_counted_reconnects_and_everything_arrives_once_acked(
        outbox, protocol):
    with Mosquitto(users=PW, acl=ACL) as broker:
        eater = Proxy(broker.port, hold_acks_from=2)  # the status message's PUBACK passes
        gate = TCPProxy(eater.listener.getsockname()[0], eater.port)
        platform = Platform(broker)
        # a keepalive far beyond the timeout: only the PUBACK timeout can find this link
        up = dataclasses.replace(upstream_cfg(At(gate.host, gate.port), keepalive_s=600),
                                 puback_timeout_s=1)
        fw = forwarder(up, protocol=protocol)
        fw.start(outbox)
        try:
            assert wait_until(lambda: (platform.status() or {}).get("state") == "online")
            gate.refuse(True)  # the next connections end at once, until the test has looked
            sent = fill(outbox, 300)
            fw.wake()
            assert wait_until(lambda: fw.counters()["puback_timeouts"] >= 1)
            assert wait_until(lambda: fw.counters()["connect_failures.network"] >= 1)
            c = fw.counters()
            # the broker took the publishes (the platform has them), no PUBACK came back:
            assert c["publishes"] >= 1 and platform.readings()[0]
            assert c["pubacks"] == c["forwarded"] == 0  # so nothing was deleted
            assert stored_keys(outbox) == set(sent)
            assert outbox.stats().in_flight == 0  # released, to go again
            assert c["in_flight"] == c["in_flight_rows"] == 0
            gate.refuse(False)
            assert wait_until(lambda: rows_stored(outbox) == 0, 20)
            assert wait_until(lambda: len(platform.readings()[0]) == 300)
            got, copies = platform.readings()
            assert got == sent
            assert max(copies.values()) >= 2  # the unacked rows went again (upstream dedups)
            c = fw.counters()
            assert c["forwarded"] == 300  # each row deleted once: nothing counted twice
            assert c["reconnects"] >= 1 and c["pubacks"] <= eater.acks_forwarded
            assert c["publishes"] >= c["pubacks"] >= 300 // 25
            # a fresh paho client per connection: paho resent nothing itself (no DUP flag);
            # every publish after the first connection is the outbox's
            assert not [f for k, f, _ in eater.sent if k == mp.PUBLISH and f & 0x08]
        finally:
            assert fw.stop()
            platform.close()
            gate.close()
            eater.close()

