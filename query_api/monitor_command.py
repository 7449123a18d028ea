"""`semsearch monitor`: the recall monitor on its own (it also runs inside `semsearch up`)."""

from __future__ import annotations

import argparse
import json
import re
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from contracts.errors import SemsearchError
from contracts.settings import Settings
from indexer.fusion import MODES
from query_api.monitor import HoldOut, Monitor
from query_api.monitor_state import MonitorState

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """'7d', '12h', '1h30m', '90s' or plain seconds → seconds (> 0)."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise SemsearchError(
                f"--every {text!r} is not a duration; use e.g. 7d, 12h, 30m, 90s or seconds"
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise SemsearchError(f"--every must be positive (got {text!r})")
    return seconds


def register(subparsers: Any) -> None:
    monitor = subparsers.add_parser(
        "monitor",
        help="measure recall@5 / nDCG@10 of a labelled hold-out set against the live API",
        description=(
            "Send every judged query of a BEIR hold-out set (queries.jsonl + qrels.tsv) to the "
            "API on a schedule and export recall@5, nDCG@10, the top-hit cosine distribution and "
            "each index's baseline (its first run) on a Prometheus endpoint."
        ),
    )
    monitor.add_argument("--queries", type=Path, help="BEIR queries.jsonl (default $SEMSEARCH_MONITOR_QUERIES)")
    monitor.add_argument("--qrels", type=Path, help="BEIR qrels.tsv (default $SEMSEARCH_MONITOR_QRELS)")
    monitor.add_argument("--api", help="API URL (default $SEMSEARCH_MONITOR_API or the configured API address)")
    monitor.add_argument("--every", help="period between runs, e.g. 7d, 12h (default $SEMSEARCH_MONITOR_EVERY_S)")
    monitor.add_argument("--once", action="store_true", help="run once, print the result as JSON, exit 1 if it failed")
    monitor.add_argument("--port", type=int, help="metrics port (default $SEMSEARCH_MONITOR_PORT; 0 = none)")
    monitor.add_argument("--state", type=Path, help="baseline file (default $SEMSEARCH_MONITOR_STATE)")
    monitor.add_argument("--mode", choices=MODES, default="hybrid", help="search mode to measure")
    monitor.add_argument(
        "--textfile", type=Path, help="with --once: also write the metrics there (node_exporter textfile)"
    )
    monitor.set_defaults(func=run_monitor)


def build_monitor(
    settings: Settings,
    api_url: str,
    *,
    queries: Path | None = None,
    qrels: Path | None = None,
    period_s: float | None = None,
    state_path: Path | None = None,
    mode: str = "hybrid",
) -> Monitor:
    """A monitor from the settings (arguments override them); bad files fail here, at start."""
    queries = queries or settings.monitor_queries
    qrels = qrels or settings.monitor_qrels
    if queries is None or qrels is None:
        raise SemsearchError(
            "the monitor needs a hold-out set: --queries and --qrels "
            "(or SEMSEARCH_MONITOR_QUERIES and SEMSEARCH_MONITOR_QRELS)"
        )
    holdout = HoldOut.load(queries, qrels)
    state = MonitorState(
        state_path or settings.monitor_state or settings.data_dir / "monitor" / "state.json",
        holdout.fingerprint,
    )
    return Monitor(
        holdout,
        api_url,
        state,
        period_s=settings.monitor_every_s if period_s is None else period_s,
        retry_s=settings.monitor_retry_s,
        mode=mode,
    )


def default_api_url(settings: Settings) -> str:
    if settings.monitor_api:
        return settings.monitor_api
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{settings.api_port}"


def run_monitor(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    monitor = build_monitor(
        settings,
        args.api or default_api_url(settings),
        queries=args.queries,
        qrels=args.qrels,
        period_s=parse_duration(args.every) if args.every else None,
        state_path=args.state,
        mode=args.mode,
    )
    if args.once:
        result = monitor.run_once()
        if args.textfile:
            from prometheus_client import write_to_textfile

            write_to_textfile(str(args.textfile), monitor.registry)
        summary: dict[str, Any] = {"api": monitor.api_url, "outcome": "ok" if result else "error"}
        if result is not None:
            baseline = monitor.state.baseline(result.index_id)
            assert baseline is not None
            summary |= result.to_json()
            summary["baseline"] = {"recall@5": round(baseline.recall_at_5, 5), "ndcg@10": round(baseline.ndcg_at_10, 5)}
        else:
            summary["error"] = monitor.last_error
        print(json.dumps(summary))
        return 0 if result is not None else 1
    port = settings.monitor_port if args.port is None else args.port
    server = monitor.serve_metrics(port, settings.api_host) if port else None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        monitor.run_forever(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.shutdown()
    return 0
