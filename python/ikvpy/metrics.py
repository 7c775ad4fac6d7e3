"""ikv's metrics for ``prometheus_client`` (``pip install "ikvpy[metrics]"``).

A training job, a model server or a Feast feature server exposes ikv beside its own
metrics::

    from prometheus_client import start_http_server
    import ikvpy.metrics

    ikvpy.metrics.register(reader, writer)   # into prometheus_client's default registry
    start_http_server(9100)

Each scrape reads the clients' counters (atomic loads, no I/O). Names and meanings are those
of ``docs/OPERATIONS.md`` ("What to watch"), the same as ``ikv serve``'s ``/metrics``.
"""

from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from ikvpy.errors import IKVTypeError, IKVValueError

try:  # optional: only this module needs it
    from prometheus_client.core import (
        REGISTRY,
        CollectorRegistry,
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError('ikvpy.metrics needs prometheus_client: pip install "ikvpy[metrics]"') from e


def _labels(sample: Dict[str, Any]) -> Tuple[Tuple[str, str], ...]:
    return tuple(sorted(sample["labels"].items()))


class IKVCollector:
    """A ``prometheus_client`` collector over ikv readers and writers (anything with a
    ``metrics()`` method shaped as :meth:`ikvpy.client.IKVReader.metrics`)."""

    def __init__(self, clients: Iterable[Any]) -> None:
        self._clients: List[Any] = []
        for c in clients:
            self.add(c)

    def add(self, client: Any) -> None:
        """Reports ``client`` too."""
        if not callable(getattr(client, "metrics", None)):
            raise IKVTypeError(f"{type(client).__name__} has no metrics(): pass an IKVReader or IKVWriter")
        self._clients.append(client)

    def collect(self) -> Iterator[Metric]:
        families: Dict[str, Dict[str, Any]] = {}
        for client in self._clients:
            for name, family in client.metrics().items():
                merged = families.setdefault(name, {**family, "samples": {}})
                for sample in family["samples"]:
                    key = _labels(sample)
                    if key in merged["samples"] and family["type"] == "counter":
                        # Two clients of one store in one process: their counts add up.
                        merged["samples"][key]["value"] += sample["value"]
                    else:
                        merged["samples"][key] = dict(sample)
        for name, family in sorted(families.items()):
            yield _family(name, family)


def _family(name: str, family: Dict[str, Any]) -> Metric:
    samples = list(family["samples"].values())
    label_names = sorted({k for s in samples for k in s["labels"]})

    def values(s: Dict[str, Any]) -> List[str]:
        return [s["labels"].get(k, "") for k in label_names]

    kind = family["type"]
    if kind == "counter":
        # prometheus_client adds the _total suffix itself.
        counter = CounterMetricFamily(name[: -len("_total")], family["help"], labels=label_names)
        for s in samples:
            counter.add_metric(values(s), s["value"])
        return counter
    if kind == "gauge":
        gauge = GaugeMetricFamily(name, family["help"], labels=label_names)
        for s in samples:
            gauge.add_metric(values(s), s["value"])
        return gauge
    if kind == "histogram":
        histogram = HistogramMetricFamily(name, family["help"], labels=label_names)
        for s in samples:
            buckets = [(repr(float(le)), count) for le, count in s["buckets"]]
            buckets.append(("+Inf", s["count"]))
            histogram.add_metric(values(s), buckets, s["sum"])
        return histogram
    raise IKVValueError(f"metric {name} has an unknown type {kind!r}")


def register(*clients: Any, registry: Optional[CollectorRegistry] = None) -> IKVCollector:
    """Registers a collector over ``clients`` with ``registry`` (the default registry when
    omitted) and returns it (``add`` more clients to it later)."""
    collector = IKVCollector(clients)
    (registry if registry is not None else REGISTRY).register(collector)
    return collector
