"""Any snapshot -- arbitrary keys (dotted or not, any characters), any values (numbers,
NaN, infinities, bools, None, text) -- renders to text the strict 0.0.4 parser accepts, and
every numeric key shows up as a series (gateway/metrics.py never raises on odd input)."""

from hypothesis import given, settings, strategies as st

from gateway import metrics
from tests.unit.test_metrics import parse_exposition

_PART = st.one_of(st.sampled_from(["pipeline", "outbox", "source", "forwarder", "agent",
                                   "alarms", "device", "last_seen_s", "history", "rows",
                                   "link_errors", "dropped", "connected", "crc", "alarm"]),
                  st.text(max_size=8))
KEYS = st.one_of(st.lists(_PART, min_size=1, max_size=5).map(".".join), st.text(max_size=30))
VALUES = st.one_of(st.integers(min_value=-(1 << 70), max_value=1 << 70),
                   st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                   st.text(max_size=5))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=25))
def test_any_snapshot_renders_to_valid_exposition_text(snapshot):
    fams = parse_exposition(metrics.render(snapshot))
    for key, value in snapshot.items():
        if metrics.format_value(value) is None:
            continue
        name, kind, labels, _ = metrics.classify(key)
        assert name in fams, key
        if fams[name]["type"] == kind:
            assert frozenset(labels.items()) in fams[name]["samples"], key
