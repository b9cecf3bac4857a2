"""Hypothesis: the radio's collision and capture rules hold for any two frames, loss never
gets better with distance, and a seed fixes every outcome."""

from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.atmodem_radio import CHANNELS_HZ
from simulators.lorawan_radio import Radio, reception_probability

EXACT = {"sigma_db": 0.0}
frame = st.tuples(st.sampled_from(CHANNELS_HZ), st.integers(0, 5), st.integers(13, 64),
                  st.integers(0, 4000000))  # freq, DR, PHY bytes, start µs


@settings(max_examples=300, deadline=None)
@given(a=frame, b=frame)
def test_a_collision_exactly_when_the_frames_overlap_on_one_channel_and_sf(a, b):
    # Equal powers, well above sensitivity: only a collision can lose a frame.
    r = Radio(sites={"a": {"g": 20}, "b": {"g": 20}}, path_loss=EXACT)
    # sent in virtual order: by start, equal starts by the radio's seeded tie-break
    (first_node, first), (second_node, second) = sorted([("a", a), ("b", b)],
                                                         key=lambda x: (x[1][3], r.order_key(x[0], 0)))
    t1 = r.transmit(first_node, *first)
    t2 = r.transmit(second_node, *second)
    overlap = t1.start_us < t2.end_us and t2.start_us < t1.end_us
    same = t1.freq_hz == t2.freq_hz and t1.sf == t2.sf
    assert r.counters["collisions"] == (1 if overlap and same else 0)
    assert t1.heard  # the frame already on air keeps its receiver
    assert t2.heard == (not (overlap and same))
    assert t2.losses == ({} if t2.heard else {"g": "collision"})


@settings(max_examples=300, deadline=None)
@given(d_first=st.floats(1, 150), d_later=st.floats(1, 150), dr=st.integers(0, 5),
       offset_us=st.integers(1, 50000))  # strictly later (equal starts: the tie-break)
def test_capture_the_later_frame_survives_only_six_db_stronger(d_first, d_later, dr, offset_us):
    r = Radio(sites={"first": {"g": d_first}, "later": {"g": d_later}}, path_loss=EXACT)
    t1 = r.transmit("first", CHANNELS_HZ[0], dr, 24, 0)
    t2 = r.transmit("later", CHANNELS_HZ[0], dr, 24, offset_us)
    margin = r.mean_rssi_dbm("later", "g") - r.mean_rssi_dbm("first", "g")
    assert t1.heard
    assert t2.heard == (margin >= 6.0)
    assert r.counters["captures"] == (1 if margin >= 6.0 else 0)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), d_near=st.floats(1, 2000), extra=st.floats(0, 2000),
       dr=st.integers(0, 5), frames=st.integers(1, 12))
def test_loss_never_improves_with_distance(seed, d_near, extra, dr, frames):
    near = Radio(seed=seed, sites={"n": {"g": d_near}})
    far = Radio(seed=seed, sites={"n": {"g": d_near + extra}})
    for i in range(frames):
        t_near = near.transmit("n", CHANNELS_HZ[1], dr, 30, i * 10000000)
        t_far = far.transmit("n", CHANNELS_HZ[1], dr, 30, i * 10000000)
        assert t_far.power_dbm["g"] <= t_near.power_dbm["g"]
        assert t_near.heard or not t_far.heard
    sf = 12 - dr
    assert reception_probability(d_near + extra, sf) <= reception_probability(d_near, sf)
    if sf < 12:
        assert reception_probability(d_near, sf) <= reception_probability(d_near, sf + 1)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32),
       frames=st.lists(st.tuples(st.sampled_from("abc"), frame), min_size=1, max_size=25))
def test_the_same_seed_and_frames_give_the_same_outcome(seed, frames):
    sites = {"a": {"g1": 150, "g2": 400}, "b": {"g1": 250}, "c": {"g2": 90, "g1": 600}}

    def run():
        r = Radio(seed=seed, sites=sites)
        out = []
        for node, (freq, dr, phy, start) in sorted(frames, key=lambda f: f[1][3]):
            tx = r.transmit(node, freq, dr, phy, start)
            out.append((sorted(tx.power_dbm.items()), [x.gateway_id for x in tx.receptions],
                        sorted(tx.losses.items())))
        return out, r.counters
    assert run() == run()
