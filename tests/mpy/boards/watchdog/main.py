# Test firmware: a watchdog not fed, then an error with the watchdog running, then a deep
# sleep and a normal end. The boot count lives in RTC memory, which a watchdog reset keeps.
import json
import time

import machine

rtc = machine.RTC()
boot = int(rtc.memory() or b"0") + 1
rtc.memory(str(boot).encode())
print("APP " + json.dumps({"boot": boot, "cause": machine.reset_cause(), "ticks_ms": time.ticks_ms()}))
if boot < 4:
    wdt = machine.WDT(timeout=2000)
    for _ in range(3):
        time.sleep_ms(1500)
        wdt.feed()
    if boot == 1:
        time.sleep_ms(5000)  # not fed for 5 s: the watchdog resets the board 2 s after the feed
        print("APP unreachable")
    elif boot == 2:
        raise RuntimeError("an uncaught error with the watchdog running")
    machine.deepsleep(10000)
