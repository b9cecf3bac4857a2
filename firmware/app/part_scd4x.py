"""The Sensirion SCD4x (CO2, temperature, RH) as a sampled ``Sensor``.

``app.sensors`` holds the sampler and the ``Sensor`` contract; it imports this module only
when the configuration has this part, so the class takes no heap on other nodes."""

try:
    from micropython import const
except ImportError:  # CPython (tests)

    def const(x):
        return x


from .sensors import _NACK_ERRNOS, Sensor

_SCD4X_POLL_MS = const(1000)
_SCD4X_MAX_POLLS = const(7)  # a periodic sample is due every 5 s (30 s in low power: see read)


class SCD4xSensor(Sensor):
    quantities = ("co2_ppm", "temperature_c", "rh_percent")
    power_up_ms = 1000  # REFERENCE §1 "Bus facts": 1000 ms to idle after VDD

    def prepare(self):
        from drivers.scd4x import SCD4X

        s = self.spec
        self.dev = SCD4X(self.bus, self.clock, s["address"])
        # After a reset of the ESP32 alone the sensor may still be measuring: stop first
        # (allowed in every state), or every setting below would be NACKed.
        self.clock.sleep_ms(self.dev.stop_periodic_measurement())
        self.dev.set_temperature_offset(s["temperature_offset_c"])
        if s.get("ambient_pressure_hpa"):
            self.dev.set_ambient_pressure(s["ambient_pressure_hpa"])
        else:
            self.dev.set_sensor_altitude(s["altitude_m"])
        self.dev.set_automatic_self_calibration_enabled(s["asc_enabled"])
        mode = s["mode"]
        if mode == "periodic":
            return self.dev.start_periodic_measurement()
        if mode == "low_power":
            return self.dev.start_low_power_periodic_measurement()
        return 0

    def start(self):
        if self.spec["mode"] == "single_shot":
            return self.dev.measure_single_shot()
        return 0

    def read(self, ctx):
        # Periodic: a wake a cycle apart nearly always finds a new sample waiting, so it is
        # read at once. With none waiting the sensor NACKs read_measurement's read header
        # (REFERENCE §1.1); get_data_ready_status is then polled, and the sample read.
        dev = self.dev
        mode = self.spec["mode"]
        polls = 0 if mode == "single_shot" else _SCD4X_MAX_POLLS * (6 if mode == "low_power" else 1)
        while True:
            try:
                co2, t, rh = dev.read_measurement()
                return [("co2_ppm", co2), ("temperature_c", t), ("rh_percent", rh)]
            except OSError as e:
                if not polls or e.errno not in _NACK_ERRNOS:
                    raise
            while polls and not dev.get_data_ready_status():
                polls -= 1
                self.clock.sleep_ms(_SCD4X_POLL_MS)
            polls = 0  # one more read: the sample now waiting (none: its NACK is raised)
