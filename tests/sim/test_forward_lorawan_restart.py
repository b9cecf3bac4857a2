"""The LoRaWAN upstream's airtime budget survives a restart and a power cut
(gateway/airtime_budget.py, gateway/forward/lorawan_session.py): the AT-modem emulator on a pty
(its own log of what went on air is the judge), a real SQLite outbox file, one VirtualClock.

A gateway that forgot what it spent could, once restarted, drive the modem past the 1 % duty
cycle of the hour it was in; the budget is stored in the outbox's state (``synchronous=FULL``)
and put back on the new process's clock, and each uplink is counted there *before* it goes on
air."""

import random
import shutil

from gateway import app, config
from gateway.airtime_budget import AirtimeBudget
from gateway.forward.lorawan import LoRaWANForwarder
from gateway.forward.lorawan_session import STATE_AIRTIME
from gateway.outbox import Outbox
from gateway.security import Secrets
from tests.gatewaykit import device_toml, site_toml
from tests.sim.test_forward_lorawan import (  # noqa: F401 (site: the fixture)
    APP_KEY, HOUR_MS, JOIN_EUI, _until, assert_all_delivered, max_airtime_in_window, readings,
    site)

DEV = "sch1-rm12-co2"


def restart(s):
    """The gateway process ends and starts again: a new forwarder (its clock count from 0)
    on the outbox file opened afresh; the modem (the emulator) keeps running."""
    s.fwd.stop()
    s.outbox.close()
    s.outbox = Outbox(s.tmp / "outbox.db", 64 << 20, 30 * 86400, s.clock)
    s.fwd = LoRaWANForwarder(s.fwd.up, APP_KEY, s.clock, rng=random.Random(11),
                             command_timeout_ms=500)
    s.fwd.attach(s.outbox)


def test_a_restarted_gateway_keeps_to_the_duty_cycle_of_the_hour_it_was_in(site):
    s = site(dr=0)  # SF12: a full uplink is 2.8 s on air, 12 an hour
    s.put(readings("a", 200, q="co2_ppm", base=1000) + readings("b", 200, q="co2_ppm", base=700))
    while s.fwd.counters()["budget_waits"] == 0:
        assert s.fwd.run_once() is not None  # no clock advance: stop at the first wait
    sent = len(s.uplinks)
    assert sent == 12  # the hour's 36 s are spent
    restart(s)
    wait = s.fwd.run_once()
    assert wait == 0 and s.fwd.counters()["joins"] == 0  # the modem kept its session
    wait = s.fwd.run_once()  # a full uplink is ready: without the stored budget it would go
    assert wait > 0 and len(s.uplinks) == sent
    c = s.fwd.counters()
    assert (c["budget_waits.duty_cycle"], c["uplinks"], c["budget_state_errors"]) == (1, 0, 0)
    assert s.fwd.status()["duty_used_ms"] >= 12 * 2794
    s.clock.advance_us(wait * 1000)
    s.drain()
    assert_all_delivered(s)
    # the emulator's own log: no sliding hour ever held more than 1 %, across the restart
    assert max_airtime_in_window(s.uplinks, HOUR_MS) <= 36000
    assert s.emu.counters["duty_cycle_refusals"] == 0


def test_an_uplink_on_air_when_the_power_goes_is_already_counted(site):
    """The outbox file as a power cut leaves it (copied, WAL included, at the moment the
    modem transmits, while the forwarder waits for the send's result) already counts that
    uplink's airtime: it was stored before the radio was asked."""
    s = site(dr=0)
    s.put(readings("a", 30, q="co2_ppm", base=1000))
    cut = s.tmp / "cut"
    cut.mkdir()

    def power_cut(uplink):
        s.uplinks.append(uplink)
        if len(s.uplinks) == 2:
            for suffix in ("", "-wal"):
                shutil.copyfile(str(s.tmp / "outbox.db") + suffix, str(cut / "o.db") + suffix)
    s.emu.network = power_cut
    s.drain()
    assert len(s.uplinks) >= 2
    ob = Outbox(cut / "o.db", 64 << 20, 30 * 86400, s.clock)  # WAL recovery, as at boot
    try:
        state = ob.load_state(STATE_AIRTIME)
    finally:
        ob.close()
    b = AirtimeBudget()
    b.restore(state, 0)
    on_air = sum(u.airtime_ms for u in s.uplinks[:2])
    join_ms = 1483  # the join request at SF12 (docs/gateway-lorawan-upstream.md)
    assert b.usage(0)["duty_used_ms"] >= on_air + join_ms


def test_a_restarted_agent_built_from_its_configuration_waits_out_the_hour(site, tmp_path):
    """The whole gateway, twice: ``app.build`` on a TOML configuration whose
    ``[upstream.lorawan]`` is the emulator's port, the forwarder on its own thread. The first
    run spends the hour's 36 s; the second, on the same outbox file, sends nothing before
    the hour is over, though it has rows and the modem is joined."""
    s = site(dr=0)
    path = tmp_path / "gateway.toml"
    path.write_text(site_toml(keys_file="keys.toml") + device_toml(DEV)
                    + '[[sources.serial]]\nport = "loop://"\n'
                    + '[upstream.lorawan]\nport = "%s"\nbaudrate = %d\ndialect = "%s"\n'
                      'join_eui = "%s"\napp_key_file = "appkey.hex"\nmax_delay_s = 0\n'
                    % (s.link, s.emu.baudrate, s.dialect, JOIN_EUI))
    cfg = config.load(path)
    assert cfg.upstream_lorawan.max_delay_s == 0
    secrets = Secrets({}, {DEV: bytes(range(32))}, APP_KEY)

    def run(until, rows=()):
        agent = app.build(cfg, secrets, s.clock, sources=[])
        agent.outbox.put_many(rows)
        agent.start()
        try:
            try:
                _until(lambda: until(agent.forwarder.counters()))
            except AssertionError:
                raise AssertionError((agent.forwarder.counters(), agent.forwarder.status()))
            return agent.forwarder.counters()
        finally:
            agent.stop()

    first = run(lambda c: c["budget_waits"] >= 1, readings(DEV, 1000, q="co2_ppm", base=900))
    assert first["uplinks"] == len(s.uplinks) == 12
    second = run(lambda c: c["budget_waits"] >= 1)
    assert (second["uplinks"], second["joins"], second["budget_waits.duty_cycle"]) == (0, 0, 1)
    assert len(s.uplinks) == 12 and s.emu.counters["duty_cycle_refusals"] == 0
