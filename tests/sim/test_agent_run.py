"""The agent's life cycle with the fakes of ``test_agent``: a threaded ``run`` stopped with
its queue drained, a part that cannot start, and the wall-clock timer."""

import logging
import sqlite3
import threading

from gateway import app, config
from gateway.security import Secrets
from protocol import frame
from simulators.clock import VirtualClock
from tests.sim.test_agent import CONFIG, DEV, FAST, KEY, NodeSource, Upstream, readings


class ThreadedNode(NodeSource):
    """Sends frames from its own thread until stopped, as a real source does."""

    def start(self, sink):
        self.sink, self.accepted = sink, 0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop)
        self._thread.start()

    def _loop(self):
        seq = 0
        while not self._halt.is_set() and seq < 5 * 400:  # then quiet, as a node with no news
            if self.send(readings(seq, 5)):
                self.accepted += 1
                seq += 5

    def stop(self, timeout_s=5.0):
        self._halt.set()
        self._thread.join(timeout_s)
        self.stopped = True


def test_run_until_stopped_stores_and_acks_everything_queued(tmp_path):
    (tmp_path / "gateway.toml").write_text(CONFIG)
    cfg = config.load(tmp_path / "gateway.toml")
    node, up, stop = ThreadedNode(None), Upstream(), threading.Event()
    agent = app.build(cfg, Secrets({}, {DEV: KEY}, None), VirtualClock(), sources=[node],
                      forwarder=up, **FAST)
    ready = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), kwargs={"ready": ready.set})
    runner.start()
    assert ready.wait(10)
    while len(node.acks) < 20:
        stop.wait(0.01)
    stop.set()
    runner.join(20)
    assert not runner.is_alive() and node.stopped and up.stopped
    # every frame the agent took was stored and acked, the last ones by the drain at stop
    assert len(node.acks) == node.accepted and node.bad_acks == 0
    assert [a.seq_through for a in node.acks] == [5 * i + 4 for i in range(node.accepted)]
    db = sqlite3.connect(cfg.outbox.path)
    assert db.execute("SELECT count(*) FROM rows").fetchone()[0] == 5 * node.accepted
    db.close()


class BrokenSource(NodeSource):
    def start(self, sink):
        raise OSError(2, "No such file or directory: '/dev/ttyUSB9'")


def test_a_part_that_cannot_start_is_logged_and_the_others_run(tmp_path, caplog):
    (tmp_path / "gateway.toml").write_text(CONFIG)
    cfg = config.load(tmp_path / "gateway.toml")
    good, bad = NodeSource(cfg.outbox.path), BrokenSource(None, name="serial:/dev/ttyUSB9")
    agent = app.build(cfg, Secrets({}, {DEV: KEY}, None), VirtualClock(), sources=[bad, good],
                      forwarder=Upstream(), **FAST)
    with caplog.at_level(logging.ERROR, logger="civicedge.gateway"):
        agent.start()
    assert "source serial:/dev/ttyUSB9: start failed: FileNotFoundError" in caplog.text
    good.send(readings(0, 1))
    agent.step()
    assert good.acks == [frame.Ack(DEV, 7, 0)] and agent.snapshot()["agent.source_errors"] == 1
    agent.stop()


def test_the_wall_check_runs_on_the_monotonic_timer(tmp_path):
    from gateway.agent import Agent
    from gateway.outbox import Outbox
    from gateway.pipeline import Ingest

    clock, calls = VirtualClock(), []
    box = Outbox(tmp_path / "o.sqlite3", 1 << 20, 3600, clock)
    agent = Agent(Ingest({}), box, clock, gateway_id="gw1", wall_check=lambda: calls.append(1),
                  wall_check_s=60, **FAST)
    agent.start()
    agent.step()
    clock.jump_wall(86400)  # a wall clock step fires nothing
    agent.step()
    assert calls == []
    clock.advance_s(60)
    agent.step()
    agent.step()
    assert calls == [1]
    agent.stop()


def test_the_bounds_timer_waits_a_period_after_a_stored_batch(tmp_path):
    from gateway.agent import Agent
    from gateway.outbox import Outbox
    from gateway.pipeline import Ingest

    clock, enforced = VirtualClock(), []
    box = Outbox(tmp_path / "o.sqlite3", 1 << 20, 3600, clock)
    real = box.enforce
    box.enforce = lambda: enforced.append(1) or real()
    node = NodeSource(None)
    agent = Agent(Ingest({DEV: KEY}), box, clock, gateway_id="gw1", sources=[node],
                  enforce_s=60, **FAST)
    agent.start()
    for seq in range(3):  # a batch every 40 s: each put_many applied the bounds
        clock.advance_s(40)
        node.send(readings(seq, 1))
        agent.step()
    assert enforced == [] and len(node.acks) == 3
    clock.advance_s(60)  # a period with nothing stored: the timer's own enforce
    agent.step()
    assert enforced == [1]
    agent.stop()
