"""The outbox shared by threads as the agent shares it: one thread stores batches while the size
bound drops old rows, another takes (new rows read without the lock, through the second
connection), acks and sometimes releases. Nothing handed out is ever dropped (every ack
deletes every row it names), nothing is handed out twice while in flight, and the counters
match the rows the file holds."""

import sqlite3
import threading

from gateway.outbox import Outbox, OutboxRecord
from simulators.clock import VirtualClock


def rec(dev, seq):
    return OutboxRecord(dev, 1, seq, {"seq": seq, "t": 1767225600 + seq,
                                      "values": [["co2_ppm", 400 + seq % 700, "ok"]]})


def test_takes_without_the_lock_never_hand_out_a_dropped_row(tmp_path):
    ob = Outbox(str(tmp_path / "o.db"), 60_000, 86400, VirtualClock())  # a few hundred rows
    errors, done = [], threading.Event()
    taken_twice, short_acks, dropped_seen = [], [], []

    def store():
        try:
            for b in range(150):
                ob.put_many([rec("dev-%d" % (i % 3), b * 40 + i) for i in range(40)])
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)
        finally:
            done.set()

    def forward():
        try:
            held, turn = set(), 0
            while not done.is_set() or held:
                rows = ob.take(25, raw=turn % 2 == 0)
                ids = [r.row_id for r in rows]
                taken_twice.extend(set(ids) & held)
                held.update(ids)
                turn += 1
                if turn % 7 == 0:  # a forward that failed: back, to be taken again
                    ob.release(ids)
                    held.difference_update(ids)
                    continue
                n = ob.ack(ids)
                if n != len(ids):
                    short_acks.append((len(ids), n))
                held.difference_update(ids)
                if not rows and done.is_set():
                    break
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=store), threading.Thread(target=forward)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    st = ob.stats()
    dropped_seen.append(sum(st.dropped.values()))
    assert dropped_seen[0] > 0  # the bound did drop rows while the forwarder took
    assert taken_twice == [] and short_acks == []
    with sqlite3.connect(ob.path) as db:
        rows = dict(db.execute("SELECT lane, count(*) FROM rows GROUP BY lane"))
        nbytes = dict(db.execute("SELECT lane, sum(length(payload) + 2 * length(device_id) "
                                 "+ 56) FROM rows GROUP BY lane"))
    assert {k: v for k, v in st.rows.items() if v} == rows
    assert {k: v for k, v in st.bytes.items() if v} == nbytes
    assert st.in_flight == 0
    ob.close()
