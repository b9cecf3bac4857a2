"""The Raspberry Pi gateway agent (CPython): sources, core pipeline, SQLite outbox,
forwarders, CLI and configuration. This package also holds the Pi's own hardware shell:
the smbus2 I2C adapter (``gateway.i2c``) and the system clock (``gateway.clock``)."""
