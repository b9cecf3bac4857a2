"""The drain bench's baseline (``simulators.bench_gateway_drain``): the naive forwarder, one
QoS 1 publish per reading from memory, run as a child process."""

import json
import threading
import time

from simulators.bench_gateway_child import SITE, _hwm
from simulators.bench_gateway_fill import records


def child_naive(a):
    """The naive forwarder: the readings in memory, one SenML JSON pack of one reading a
    message, each published QoS 1 with paho's defaults (MQTT 3.1.1, its in-flight window of
    20, its network thread); ``wait`` waits for each PUBACK before the next publish."""
    import paho.mqtt.client as mqtt

    from gateway import upstream, upstream_fast

    payloads = [(upstream.topic(SITE, r.device_id, upstream.READINGS),
                 upstream_fast.pack_json(r.device_id, r.boot_epoch, [r.record],
                                         upstream.DEFAULT_PEN))
                for r in records(a["n"])]
    done, acked = threading.Event(), [0]

    def on_publish(client, userdata, mid, reason_code, properties):
        acked[0] += 1
        if acked[0] == len(payloads):
            done.set()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="naive-bench")
    c.username_pw_set("gw", a["password"])
    c.on_publish = on_publish
    connected = threading.Event()
    c.on_connect = lambda *args: connected.set()
    c.connect(a["host"], a["port"])
    c.loop_start()
    connected.wait(10)
    cpu0, t0 = time.process_time(), time.monotonic()
    for topic, payload in payloads:
        info = c.publish(topic, payload, qos=1)
        if a["wait"]:
            info.wait_for_publish()
    done.wait(900)
    out = {"t0": t0, "t_acked": time.monotonic(), "cpu_s": time.process_time() - cpu0,
           "acked": acked[0], "hwm_kb": _hwm()}
    c.disconnect()
    c.loop_stop()
    print(json.dumps(out), flush=True)
