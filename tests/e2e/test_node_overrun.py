"""A deep-sleeping node whose wake cycle outlasts its interval wakes again at once.

On an ESP32 ``machine.deepsleep(0)`` arms no timer: the node would sleep until a power cycle.
The legionella build at the shortest interval the schema allows (5 s) spends its first cycle
on an OTAA join, whose accept alone comes 5 s after the request (RX1 of a join, REFERENCE
§6: JOIN_ACCEPT_DELAY1), so the cycle overruns the interval; the board shim ends a run "asleep" on a deep sleep
with no wake time. Checked: the run ends after its wakes, with every reading delivered."""

from tests.e2e.test_node_lorawan import _build, check_every_reading, run, unique

WAKES = 3


def test_a_cycle_longer_than_the_interval_does_not_sleep_for_ever(tmp_path):
    build = _build("rak3172", tmp_path / "flash", ["interval_s=5", "link.lorawan.max_delay_s=0"])
    got = run(build, tmp_path, WAKES)  # asserts the run ended on its wake count
    assert got.summary["boots"] == WAKES + 1 and got.summary["resets"]["wdt"] == 0
    check_every_reading(unique(got.gw), WAKES)
