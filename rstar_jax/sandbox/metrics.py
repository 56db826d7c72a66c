"""Service metrics in the Prometheus text format (`GET /metrics`).

Counters by label set, one latency histogram per route, and gauges read from the backend at
scrape time. Names carry units (`_seconds`, `_total`).
"""
import collections
import math

# Upper bounds of the latency histogram buckets, in seconds.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(labels: tuple) -> str:
  if not labels:
    return ""
  escaped = (f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
             for k, v in labels)
  return "{" + ",".join(escaped) + "}"


class Metrics:
  """Counters and histograms of one service process."""

  def __init__(self):
    self._counters: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    self._help: dict[str, str] = {}
    self._histograms: dict[tuple, list] = {}

  def count(self, name: str, help_text: str, amount: int = 1, **labels) -> None:
    """Adds `amount` to counter `name` with `labels`."""
    self._help[name] = help_text
    self._counters[name][tuple(sorted(labels.items()))] += amount

  def observe_latency(self, route: str, seconds: float) -> None:
    """Records one request latency for `route`."""
    buckets = self._histograms.setdefault((route,), [0] * len(LATENCY_BUCKETS_S) + [0, 0.0])
    for i, bound in enumerate(LATENCY_BUCKETS_S):
      if seconds <= bound:
        buckets[i] += 1
    buckets[-2] += 1
    buckets[-1] += seconds

  def render(self, gauges: dict[str, float]) -> str:
    """The exposition text: counters, the latency histogram, then `gauges` (name -> value)."""
    lines = []
    for name, series in sorted(self._counters.items()):
      lines += [f"# HELP {name} {self._help[name]}", f"# TYPE {name} counter"]
      lines += [f"{name}{_labels(labels)} {value}" for labels, value in sorted(series.items())]
    name = "sandbox_request_duration_seconds"
    lines += [f"# HELP {name} HTTP request latency by route.", f"# TYPE {name} histogram"]
    for (route,), buckets in sorted(self._histograms.items()):
      for bound, count in zip(LATENCY_BUCKETS_S + (math.inf,), buckets[:-2] + [buckets[-2]]):
        le = "+Inf" if bound == math.inf else repr(bound)
        lines.append(f"{name}_bucket{_labels((('route', route), ('le', le)))} {count}")
      lines.append(f"{name}_count{_labels((('route', route),))} {buckets[-2]}")
      lines.append(f"{name}_sum{_labels((('route', route),))} {buckets[-1]}")
    for gauge, value in sorted(gauges.items()):
      lines += [f"# TYPE {gauge} gauge", f"{gauge} {value}"]
    return "\n".join(lines) + "\n"
