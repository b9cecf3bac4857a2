"""The ``heap`` benchmark's MQTT row (``simulators/bench_heap.py``): the classroom-co2 node
built with ``link="mqtt"`` as the profile ships it (TLS, the CA on its flash, username and
password), deep-sleeping so each wake connects, publishes and waits for its ack, against a
real Mosquitto with TLS, passwords and the node's ACL (``simulators.broker``) and the
gateway side ``MQTTGatewayStub``. The 32-bit build of the unix port has no ``ssl``, so
there the same node is measured over plain MQTT (``link.mqtt.tls=false``, a loopback broker).

Each heap tried gets a fresh broker (no persistence, so no session, queued frame or ack of
an earlier run leaks into the count) on the port the build names.
"""

import json
import pathlib
import shutil

from simulators.broker import Mosquitto, free_port, make_test_tls

DEVICE = "sch1-rm12-co2"
SSID = "school-iot"
WIFI_PW = "wifi-5d2c9a7e41"
PASSWORDS = {DEVICE: "node-7c1e94d2a5f0", "gateway": "gw-3b8f0e6a1d92"}
ACL = ["user gateway", "topic readwrite civicedge/node/#",
       "pattern write civicedge/node/%u/up", "pattern read civicedge/node/%u/ack"]


class MQTTSite:
    """The far end of the MQTT link for one build: the test CA and a broker port.
    ``tls=False`` builds plain MQTT (the 32-bit port, which has no ``ssl``)."""

    def __init__(self, directory, tls=True):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.certs = make_test_tls(str(self.directory)) if tls else None
        self.port = free_port()

    def build(self, out, key, sets=(), sleep="deep"):
        """The classroom-co2 build for this site, its CA file and secrets; returns ``out``.
        ``sleep`` "deep" (each wake a boot that connects) or "light" (the profile's: one
        boot, the session kept between cycles)."""
        from civicedge import firmware_build as fb

        out = pathlib.Path(out)
        fb.build("esp32-devkitc", "classroom-co2", DEVICE, out, link="mqtt",
                 sets=["power.sleep=" + sleep, "link.wifi.ssid=" + SSID, "link.mqtt.host=127.0.0.1",
                       "link.mqtt.port=%d" % self.port, "link.mqtt.tls=%s" % ("true" if self.tls else "false")]
                 + list(sets))
        if self.tls:
            shutil.copyfile(self.certs["cafile"], out / "ca.pem")  # the profile's link.mqtt.ca_file
        (out / "secrets.json").write_text(json.dumps({"device_key_hex": key.hex(), "wifi_password": WIFI_PW,
                                                      "mqtt_password": PASSWORDS[DEVICE]}))
        return out

    def broker(self):
        tls = {"certfile": self.certs["certfile"], "keyfile": self.certs["keyfile"]} if self.tls else None
        return Mosquitto(users=PASSWORDS, acl=ACL, tls=tls, port=self.port)

    def gateway(self, broker, key):
        from simulators.mqtt_gateway import MQTTGatewayStub

        return MQTTGatewayStub("127.0.0.1", broker.port, "gateway", PASSWORDS["gateway"], {DEVICE: key},
                               tls=self.certs)

    def sim(self, devices):
        """A started ``SimServer`` with ``devices`` and the site's access point."""
        from simulators.i2c_server import SimServer

        srv = SimServer().start()
        srv.rig.setup(devices)
        with srv.lock:
            srv.wifi.update(ssid=SSID, key=WIFI_PW)
        return srv


def mqtt_ok(site, install, key, devices, run_board, wakes):
    """``ok(heap, extra)`` for the bisection: ``run_board(install, heap, extra, server)``
    returns the board's summary; true when the run completed its wakes and the gateway
    received every wake's reading."""

    def ok(heap, extra):
        with site.broker() as broker, site.gateway(broker, key) as gw:
            srv = site.sim(devices)
            try:
                s = run_board(install, heap, extra, srv)
            finally:
                srv.stop()
            readings = {(e, r["seq"]) for d, e, r in gw.records if r.get("kind", "reading") == "reading"}
        return s is not None and s.get("end") == "wakes" and len(readings) >= wakes + 1
    return ok
