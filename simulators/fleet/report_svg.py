"""Small inline-SVG time charts for the fleet report (no libraries, no scripts).

A ``TimeChart`` spans ``[t0, t1]`` (Unix seconds, labelled in UTC as ``HH:MM``, or
``Mon 02 HH:MM`` when the span crosses midnight) and a value range; layers are drawn in the
order added: shaded windows, lines, dots, markers, horizontal reference lines. Every text
is escaped; colours come from the CSS classes in ``STYLE``.
"""

import math
from datetime import datetime, timezone
from html import escape

STYLE = """
svg.chart { background: #fff; font: 11px sans-serif; }
svg.chart .axis { stroke: #555; stroke-width: 1; }
svg.chart .grid { stroke: #e4e4e4; stroke-width: 1; }
svg.chart text { fill: #333; }
svg.chart .truth { fill: none; stroke: #1f5fa8; stroke-width: 1.5; }
svg.chart .backlog { fill: none; stroke: #6a3d9a; stroke-width: 1.5; }
svg.chart .reported { fill: #e07b00; fill-opacity: 0.8; }
svg.chart .flagged { fill: #c00; }
svg.chart .raised { fill: #c00; }
svg.chart .cleared { fill: #2a8a2a; }
svg.chart .limit { stroke: #c00; stroke-dasharray: 4 3; stroke-width: 1; }
svg.chart .episode { fill: #f6c343; fill-opacity: 0.35; }
svg.chart .fault { fill: #888; fill-opacity: 0.25; }
svg.chart .fault-node { fill: #d9534f; fill-opacity: 0.22; }
svg.chart .bar { fill: #d9534f; fill-opacity: 0.7; }
svg.chart .instant { stroke: #d9534f; stroke-width: 2; }
"""
_TIME_STEPS = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
               2 * 86400, 7 * 86400)


def multi_day(t0, t1):
    """True if ``[t0, t1]`` (Unix s) crosses a UTC midnight."""
    return int(t0 // 86400) != int(max(t0, t1 - 1e-6) // 86400)


def fmt_time(t, with_day=False):
    """``HH:MM`` (UTC) of Unix time ``t``; ``Mon 02 HH:MM`` with ``with_day``."""
    d = datetime.fromtimestamp(t, timezone.utc)
    return d.strftime("%a %d %H:%M" if with_day else "%H:%M")


def nice_ticks(lo, hi, n=5):
    """About ``n`` round tick values covering ``[lo, hi]``."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out, v = [], first
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


def fmt_num(v):
    """A tick label: no trailing zeros, at most 3 decimals."""
    text = ("%.3f" % v).rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def value_range(values, extra=()):
    """``(lo, hi)`` padded by 5 %, over finite ``values`` and ``extra``."""
    vs = [v for v in list(values) + list(extra) if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vs:
        return 0.0, 1.0
    lo, hi = min(vs), max(vs)
    pad = (hi - lo) * 0.05 or max(abs(hi) * 0.05, 1.0)
    return lo - pad, hi + pad


class TimeChart:
    """One chart: ``width`` x ``height`` px, time on x (Unix s), value on y."""

    left, right, top, bottom = 58, 12, 14, 30

    def __init__(self, t0, t1, y0, y1, width=760, height=200, y_label="", title=""):
        self.t0, self.t1 = float(t0), float(max(t1, t0 + 1))
        self.y0, self.y1 = float(y0), float(y1 if y1 > y0 else y0 + 1)
        self.w, self.h = width, height
        self.y_label, self.title = y_label, title
        self.parts = []

    def x(self, t):
        span = self.w - self.left - self.right
        t = min(max(t, self.t0), self.t1)
        return self.left + (t - self.t0) / (self.t1 - self.t0) * span

    def y(self, v):
        span = self.h - self.top - self.bottom
        v = min(max(v, self.y0), self.y1)
        return self.top + (self.y1 - v) / (self.y1 - self.y0) * span

    def shade(self, a, b, cls, label=""):
        """A vertical band over ``[a, b]`` (Unix s)."""
        if b < self.t0 or a > self.t1:
            return
        x0, x1 = self.x(a), self.x(b)
        self.parts.append('<rect class="%s" x="%.1f" y="%d" width="%.1f" height="%d">'
                          '<title>%s</title></rect>'
                          % (cls, x0, self.top, max(x1 - x0, 1.0),
                             self.h - self.top - self.bottom, escape(label)))

    def line(self, ts, vs, cls):
        """A polyline through ``(ts, vs)``; broken where a value is missing."""
        runs, cur = [], []
        for t, v in zip(ts, vs):
            if isinstance(v, (int, float)) and math.isfinite(v):
                cur.append("%.1f,%.1f" % (self.x(t), self.y(v)))
            elif cur:
                runs.append(cur)
                cur = []
        if cur:
            runs.append(cur)
        for pts in runs:
            self.parts.append('<polyline class="%s" points="%s"/>' % (cls, " ".join(pts)))

    def dots(self, ts, vs, cls, r=1.8):
        for t, v in zip(ts, vs):
            self.parts.append('<circle class="%s" cx="%.1f" cy="%.1f" r="%.1f"/>'
                              % (cls, self.x(t), self.y(v), r))

    def marker(self, t, cls, label=""):
        """A downward triangle at the top edge at time ``t``."""
        x, y = self.x(t), self.top
        self.parts.append('<path class="%s" d="M%.1f %.1f l-5 -9 h10 z"><title>%s</title></path>'
                          % (cls, x, y + 9, escape(label)))

    def hline(self, v, cls, label=""):
        if self.y0 <= v <= self.y1:
            self.parts.append('<line class="%s" x1="%d" x2="%d" y1="%.1f" y2="%.1f">'
                              '<title>%s</title></line>'
                              % (cls, self.left, self.w - self.right, self.y(v), self.y(v),
                                 escape(label)))

    def raw(self, svg_text):
        """Append SVG text the caller built (and escaped)."""
        self.parts.append(svg_text)

    def _axes(self, y_ticks=True):
        out, day = [], multi_day(self.t0, self.t1)
        span = self.t1 - self.t0
        step = next((s for s in _TIME_STEPS if span / s <= 8), _TIME_STEPS[-1])
        t = math.ceil(self.t0 / step) * step
        while t <= self.t1:
            x = self.x(t)
            out.append('<line class="grid" x1="%.1f" x2="%.1f" y1="%d" y2="%d"/>'
                       % (x, x, self.top, self.h - self.bottom))
            out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
                       % (x, self.h - self.bottom + 14, escape(fmt_time(t, day))))
            t += step
        if y_ticks:
            for v in nice_ticks(self.y0, self.y1):
                y = self.y(v)
                out.append('<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>'
                           % (self.left, self.w - self.right, y, y))
                out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>'
                           % (self.left - 4, y + 4, escape(fmt_num(v))))
        out.append('<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/>'
                   % (self.left, self.w - self.right, self.h - self.bottom, self.h - self.bottom))
        out.append('<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/>'
                   % (self.left, self.left, self.top, self.h - self.bottom))
        out.append('<text x="%d" y="%d" text-anchor="end">UTC</text>'
                   % (self.w - self.right, self.h - 2))
        if self.y_label:
            out.append('<text x="12" y="%d" transform="rotate(-90 12 %d)" text-anchor="middle">'
                       '%s</text>' % (self.h // 2, self.h // 2, escape(self.y_label)))
        return out

    def svg(self, y_ticks=True):
        """The chart as an ``<svg>`` element (text)."""
        body = self._axes(y_ticks) + self.parts
        return ('<svg class="chart" role="img" '
                'width="%d" height="%d" viewBox="0 0 %d %d"><title>%s</title>%s</svg>'
                % (self.w, self.h, self.w, self.h, escape(self.title), "".join(body)))


def thin(ts, vs, limit=1500):
    """Every k-th point so at most about ``limit`` remain (a chart has ~700 px)."""
    k = max(1, math.ceil(len(ts) / limit))
    return ts[::k], vs[::k]
