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
        return {"rows": self.rows + sent, "unsent": self.rows + sent, "queued": 0, "arrivals": 0}


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


class Delivered:
    """A gateway whose rows are all delivered (PUBACKed), their deletes still to come: it holds
    nothing the platform has not got, whatever its ``rows`` say; ``queued`` arrivals are held."""

    def __init__(self, rows, queued=0):
        self.rows, self.queued, self.polls = rows, queued, 0

    def command(self, cmd):
        assert cmd == "backlog"
        self.polls += 1
        queued, self.queued = self.queued, max(0, self.queued - 1)
        return {"rows": self.rows, "unsent": 0, "queued": queued, "arrivals": 7}


def test_rows_delivered_but_not_yet_deleted_are_not_waited_for():
    gw = Delivered(20)
    assert drain.settle([gw], lambda: 100, idle_s=0.0, quiet_s=30.0, stall_s=30.0) == 0
    assert gw.polls == 1 and gw.rows == 20  # settled at the first look: nothing moved


def test_arrivals_the_agent_has_not_taken_are_held():
    gw = Delivered(0, queued=3)
    assert drain.settle([gw], lambda: 0, quiet_s=0.0) == 0
    assert gw.queued == 0 and gw.polls >= 4  # held while 3, 2, 1 were queued


def test_events_not_yet_at_the_site_broker_hold_the_settle():
    counts = [2, 1]

    def in_flight():
        return counts.pop(0) if counts else 0

    gw = Delivered(0)
    assert drain.settle([gw], lambda: 0, quiet_s=0.0, in_flight=in_flight) == 0
    assert counts == [] and gw.polls >= 3  # held while 2, then 1, were on their way
