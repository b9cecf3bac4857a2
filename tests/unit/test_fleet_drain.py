"""``simulators.fleet.drain.settle``: the director waits, with the fleet's time held, until the
gateways have forwarded what they hold (docs/simulation-fleet.md, "Latency"). Fake gateways
answer the ``backlog`` command as ``GatewayProcess.command`` does (None: the gateway is off);
the platform's count is a counter the fake forwarding moves."""

from simulators.fleet import drain


class Forwarding:
    """A gateway that forwards ``per_poll`` rows each time it is asked (the platform sees them)."""

    def __init__(self, rows, per_poll, upstream):
        self.rows, self.per_poll, self.upstream = rows, per_poll, upstream

    def command(self, cmd):
        assert cmd == "backlog"
        sent = min(self.rows, self.per_poll)
        self.rows -= sent
        self.upstream.append(sent)
        return {"rows": self.rows + sent}


class Off:
    def command(self, cmd):
        return None


def test_settle_waits_until_every_backlog_is_forwarded():
    upstream = []
    gws = [Forwarding(40, 7, upstream), Forwarding(5, 1, upstream), Off()]
    assert drain.settle(gws, lambda: sum(upstream), quiet_s=0.0) == 0
    assert [g.rows for g in gws[:2]] == [0, 0]
    assert sum(upstream) == 45


def test_settle_gives_up_on_a_backlog_that_does_not_move():
    upstream = []
    stuck = Forwarding(12, 0, upstream)
    assert drain.settle([stuck, Forwarding(3, 3, upstream)], lambda: sum(upstream), stall_s=0.05) == 12
    assert sum(upstream) == 3


def test_settle_with_no_gateway_to_wait_for_returns_at_once():
    assert drain.settle([], lambda: 0) == 0
    assert drain.settle([Off()], lambda: 0, quiet_s=0.0) == 0
