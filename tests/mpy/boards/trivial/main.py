import machine

machine.deepsleep(1000)
