"""The optional Prometheus endpoint: the daemon's state, read at each scrape.

Off unless the config says `metrics: 127.0.0.1:9737` (or `metrics: true` for
that address).  Why prometheus_client and not hand-written exposition: it is
the reference implementation, keeps the text format (escaping, HELP/TYPE,
counters' _total and _created) right as it evolves, and serves from its own
thread, so a slow scraper never holds up the event loop.  It is an optional
dependency (`pip install wanhooks[metrics]`): without it the daemon logs that
and runs on.

Nothing is copied into metric objects as things happen: a custom collector
reads the daemon's own figures (the same ones `status` shows) when scraped.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger("wanhooks.metrics")

SCRAPE_TIMEOUT_S = 5.0


@dataclass
class Figures:
    """What the daemon counts for the endpoint (and only for it), updated on the event loop."""

    events: dict[str, int] = field(default_factory=dict)  # by source
    transitions: dict[tuple[str, int], int] = field(default_factory=dict)  # (link, family)
    rounds: int = 0
    round_seconds: float = 0.0  # their sum


def serve(listen: tuple[str, int], snapshot: Callable[[], dict[str, Any]], figures: Figures) -> bool:
    """Start the endpoint in its own thread; False (logged) when it cannot be.

    One thread serves one scrape at a time (prometheus_client's own server starts a
    thread per request: a flood of scrapes would be a flood of threads), and a client
    that stalls is dropped after SCRAPE_TIMEOUT_S.
    """
    try:
        from prometheus_client import make_wsgi_app
        from prometheus_client.registry import CollectorRegistry
    except ImportError:
        log.error(
            "metrics: prometheus_client is not installed (pip install 'wanhooks[metrics]'): no endpoint"
        )
        return False
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot, figures))

    class Server(WSGIServer):
        address_family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
        request_queue_size = 64  # waiting scrapers queue in the kernel, not in threads

    try:
        server = make_server(
            listen[0], listen[1], make_wsgi_app(registry), Server, handler_class=_QuietHandler
        )
    except OSError as exc:
        log.error("metrics: cannot listen on %s:%d: %s", listen[0], listen[1], exc.strerror or exc)
        return False
    threading.Thread(target=server.serve_forever, name="wanhooks-metrics", daemon=True).start()
    log.info("metrics: Prometheus endpoint on http://%s:%d/metrics", listen[0], listen[1])
    return True


class _QuietHandler(WSGIRequestHandler):
    timeout = SCRAPE_TIMEOUT_S  # a stalled client does not hold the one serving thread

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape is not news


class _Collector:
    def __init__(self, snapshot: Callable[[], dict[str, Any]], figures: Figures) -> None:
        self._snapshot = snapshot
        self._figures = figures

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily as Counter
        from prometheus_client.core import GaugeMetricFamily as Gauge

        doc = self._snapshot()
        lf = ["link", "family"]
        in_balance = Gauge("wanhooks_link_in_balance", "1 when it carries balanced traffic", labels=lf)
        weight = Gauge("wanhooks_link_weight", "the weight in the kernel's group", labels=["link"])
        share = Gauge("wanhooks_link_weight_share", "its part of the balance's weights", labels=lf)
        capacity = Gauge(
            "wanhooks_link_capacity_bps", "weight: auto's capacity estimate", labels=["link", "direction"]
        )
        age = Gauge(
            "wanhooks_link_capacity_age_seconds", "since evidence confirmed it", labels=["link", "direction"]
        )
        healthy = Gauge("wanhooks_link_healthy", "1 when its probes say it carries traffic", labels=lf)
        rtt = Gauge("wanhooks_link_rtt_seconds", "smoothed probe round trip", labels=lf)
        loss = Gauge("wanhooks_link_loss_ratio", "probes lost over the loss window", labels=lf)
        rx = Counter("wanhooks_link_received_bytes", "bytes received (kernel counters)", labels=["link"])
        tx = Counter("wanhooks_link_sent_bytes", "bytes sent (kernel counters)", labels=["link"])
        heard = Counter(
            "wanhooks_link_evidence_heard_packets",
            "packets of established connections from beyond the link: only the internet sends them",
            labels=lf,
        )
        sent = Counter("wanhooks_link_evidence_sent_packets", "packets sent beyond the link", labels=lf)
        probes = Counter("wanhooks_link_probes_sent", "probes sent (since its prober started)", labels=lf)
        probe_bytes = Counter(
            "wanhooks_link_probe_bytes",
            "probes and their answers on the wire (since its prober started)",
            labels=lf,
        )
        alive_by = Gauge(
            "wanhooks_link_alive_by_traffic",
            "1 when traffic heard from beyond shows it alive: no probe needed",
            labels=lf,
        )
        for link in doc["links"]:
            name = link["name"]
            weight.add_metric([name], link["weight"])
            cap = link.get("capacity")
            for direction in ("down", "up") if isinstance(cap, dict) else ():
                if cap[direction]["bps"] is not None:
                    capacity.add_metric([name, direction], cap[direction]["bps"])
                if cap[direction]["age_s"] is not None:
                    age.add_metric([name, direction], cap[direction]["age_s"])
            if link.get("rx_bytes") is not None:
                rx.add_metric([name], link["rx_bytes"])
                tx.add_metric([name], link["tx_bytes"])
            for family in (4, 6):
                side = link[f"ipv{family}"]
                labels = [name, str(family)]
                in_balance.add_metric(labels, 1 if side["in_balance"] else 0)
                share.add_metric(labels, (link.get("weight_share") or {}).get(f"ipv{family}", 0.0))
                evidence = side.get("evidence")
                if evidence:
                    heard.add_metric(labels, evidence["heard"])
                    sent.add_metric(labels, evidence["sent"])
                health = side.get("health")
                if health:
                    healthy.add_metric(labels, 1 if health["state"] == "up" else 0)
                    if health.get("rtt_ms") is not None:
                        rtt.add_metric(labels, health["rtt_ms"] / 1000)
                    if health.get("loss") is not None:
                        loss.add_metric(labels, health["loss"])
                    probes.add_metric(labels, health["probes_sent"])
                    probe_bytes.add_metric(labels, health["probe_bytes"])
                    alive_by.add_metric(labels, 1 if health["alive_by"] == "passive" else 0)
        figures = self._figures
        transitions = Counter("wanhooks_link_health_transitions", "health state changes", labels=lf)
        for (name, family), count in sorted(figures.transitions.items()):
            transitions.add_metric([name, str(family)], count)
        events = Counter("wanhooks_events", "events handed to the daemon, by source", labels=["source"])
        for source, count in sorted(figures.events.items()):
            events.add_metric([source], count)
        rounds = Counter("wanhooks_rounds", "reconcile rounds")
        rounds.add_metric([], figures.rounds)
        seconds = Counter("wanhooks_round_seconds", "time spent in reconcile rounds")
        seconds.add_metric([], figures.round_seconds)
        in_sync = Gauge("wanhooks_in_sync", "1 when the kernel holds exactly the plan")
        in_sync.add_metric([], 1 if doc["in_sync"] else 0)
        yield from (in_balance, weight, share, capacity, age, healthy, rtt, loss, rx, tx, heard, sent)
        yield from (probes, probe_bytes, alive_by)
        yield from (transitions, events, rounds, seconds, in_sync)
