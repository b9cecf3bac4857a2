# Test firmware: select.poll and asyncio waits on the virtual clock under board.py.
import json
import select
import socket
import time

import asyncio

with open("mode.json") as f:
    mode = json.load(f)
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", mode["port"])[0][-1])
p = select.poll()
p.register(s, select.POLLIN)
t0 = time.ticks_ms()
quiet = p.poll(2000)  # the server says nothing until spoken to
t1 = time.ticks_ms()
s.write(b"ping")
ready = p.poll(5000)
t2 = time.ticks_ms()
data = s.read(4)
s.close()


async def nap():
    await asyncio.sleep_ms(30000)


asyncio.run(nap())
t3 = time.ticks_ms()
print("APP " + json.dumps({"quiet": len(quiet), "quiet_ms": time.ticks_diff(t1, t0), "ready": len(ready),
                           "ready_ms": time.ticks_diff(t2, t1), "data": data.decode(),
                           "nap_ms": time.ticks_diff(t3, t2)}))
