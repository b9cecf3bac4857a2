# Test firmware: join the simulated access point, as mode.json says; report what it saw.
import json
import time

import machine
import network

with open("mode.json") as f:
    mode = json.load(f)
wlan = network.WLAN(network.STA_IF)
seen = {"active_at_boot": wlan.active(), "connected_at_boot": wlan.isconnected(),
        "status_at_boot": wlan.status()}
try:
    wlan.connect("civic", "secret")
except OSError as e:
    seen["inactive_connect"] = str(e)
wlan.active(True)
if mode.get("reconnects"):
    wlan.config(reconnects=mode["reconnects"])
t0 = time.ticks_ms()
wlan.connect(mode.get("ssid", "civic"), mode.get("key", "secret"))
while not wlan.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < mode["timeout_ms"]:
    time.sleep_ms(100)
seen.update({"connected": wlan.isconnected(), "status": wlan.status(), "ifconfig": wlan.ifconfig(),
             "waited_ms": time.ticks_diff(time.ticks_ms(), t0), "mac": wlan.config("mac").hex()})
if seen["connected"] and mode.get("port"):
    import socket
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", mode["port"])[0][-1])
    s.write(b"hello from the board")
    seen["echo"] = s.read(20).decode()
    s.close()
print("APP " + json.dumps(seen))
if mode.get("sleep_ms"):
    machine.deepsleep(mode["sleep_ms"])
