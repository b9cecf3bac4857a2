"""Jittered exponential backoff for reconnecting (pure: it computes delays, never sleeps).

RELIABILITY.md's fault table asks for "jittered backoff 1→120 s" while a broker is down or
unreachable. A fleet of gateways that lost the same broker must not come back in step (a
thundering herd at every retry), and one gateway must not hammer a broker that refuses it.

The rule is "full jitter" with a floor: the n-th consecutive failure (n = 1, 2, ...) waits a
delay drawn uniformly from ``[min_s, ceiling_n]`` where ``ceiling_n = min(max_s, min_s *
2**(n-1))``. So the first retry waits ``min_s`` exactly, the ceiling doubles per failure and
stays at ``max_s`` (after 8 failures for 1→120 s), every delay is within ``[min_s, max_s]``,
and the mean at the ceiling is half of it: a gateway waiting out a day-long outage retries
about once a minute, at random phase. ``reset()`` after a success starts again at ``min_s``.

The random source is injected (``rng``: anything with ``uniform(a, b)``, e.g. a seeded
``random.Random``) so tests are reproducible.
"""

import random

DEFAULT_MIN_S = 1.0
DEFAULT_MAX_S = 120.0


class Backoff:
    """Delays for consecutive failures; see the module docstring.

    Raises ``ValueError`` naming the argument if ``min_s`` is not a positive number or
    ``max_s`` is below ``min_s``."""

    def __init__(self, min_s=DEFAULT_MIN_S, max_s=DEFAULT_MAX_S, rng=None):
        for name, v in (("min_s", min_s), ("max_s", max_s)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v == v \
                    or v in (float("inf"), float("-inf")):
                raise ValueError("%s must be a finite number of seconds, got %r" % (name, v))
        if min_s <= 0:
            raise ValueError("min_s must be > 0 s, got %r" % (min_s,))
        if max_s < min_s:
            raise ValueError("max_s (%r s) must be >= min_s (%r s)" % (max_s, min_s))
        self.min_s, self.max_s = float(min_s), float(max_s)
        self.rng = rng if rng is not None else random.Random()
        self.failures = 0  # consecutive failures since the last reset

    def ceiling_s(self, failures=None):
        """The largest delay the ``failures``-th consecutive failure may wait (default: the
        next one's)."""
        n = self.failures + 1 if failures is None else failures
        if n <= 1:
            return self.min_s
        # 2**(n-1) overflows a float near n = 1025: stop doubling once past the cap
        exp = min(n - 1, 64)
        return min(self.max_s, self.min_s * float(2 ** exp))

    def next_s(self):
        """Count one more failure and return how long to wait before the next attempt (s),
        within ``[min_s, max_s]``."""
        self.failures += 1
        hi = self.ceiling_s(self.failures)
        delay = self.rng.uniform(self.min_s, hi)
        return min(max(delay, self.min_s), hi)  # uniform() may round past an end

    def reset(self):
        """A success: the next failure waits ``min_s`` again."""
        self.failures = 0
