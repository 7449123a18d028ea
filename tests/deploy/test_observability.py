"""Alert rules, dashboard and compose file stay in step with the metrics the code registers.

Dashboards and alerts fail silently: a renamed metric leaves a flat panel and an alert that can
never fire, and nobody notices until the incident it was written for. So every `semsearch_*`
name (and every fixed label value) that alerts.yml or the dashboard uses must appear in the
Python sources that register metrics, and the alert expressions themselves are exercised with
`promtool test rules` (synthetic series for each incident shape) wherever promtool is installed
(Debian/Ubuntu: `apt-get install prometheus`, which `make install` attempts); without it they fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "semsearch.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
SOURCE_PACKAGES = ("indexer", "consumers", "producers", "query_api", "semsearch")

METRIC = re.compile(r"\bsemsearch_[A-Za-z0-9_]+")
# Suffixes prometheus_client adds to what the code registers (Counter "x" -> x_total, ...).
EXPOSITION_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created", "_info")
# label="value" and label=~"a|b" matchers inside a semsearch_* selector.
SELECTOR = re.compile(r"(semsearch_[A-Za-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|=|!=|!~)\s*"([^"]*)"')
# Labels Prometheus attaches at scrape time, not the code.
SCRAPE_LABELS = {"job", "instance", "component", "le"}
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


# -- inputs -------------------------------------------------------------------------------------
@cache
def source_text() -> str:
    """Every Python source of the packages that register metrics, as one searchable string."""
    parts = []
    for package in SOURCE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def dashboard_expressions() -> list[str]:
    """PromQL of every panel target and of the template variables."""
    exprs = [v for k, v in _walk(dashboard()["panels"]) if k == "expr" and isinstance(v, str)]
    for variable in dashboard().get("templating", {}).get("list", []):
        query = variable.get("query")
        exprs.append(query.get("query", "") if isinstance(query, dict) else str(query or ""))
    return [e for e in exprs if e]


def all_expressions() -> list[tuple[str, str]]:
    """(where, expr) for every expression this deploy configuration evaluates."""
    found = [(f"alerts.yml:{r['alert']}", str(r["expr"])) for r in alert_rules()]
    found += [("semsearch.json", e) for e in dashboard_expressions()]
    return found


def is_registered(name: str) -> bool:
    """True when `name`, or the name the code registers it under, occurs in the sources."""
    candidates = {name}
    for suffix in EXPOSITION_SUFFIXES:
        if name.endswith(suffix):
            candidates.add(name[: -len(suffix)])
    text = source_text()
    return any(
        re.search(rf"(?<![A-Za-z0-9_]){re.escape(c)}(?![A-Za-z0-9_])", text) for c in candidates
    )


# -- metric names and label values ----------------------------------------------------------
def test_deploy_files_reference_semsearch_metrics() -> None:
    names = {m for _, expr in all_expressions() for m in METRIC.findall(expr)}
    assert len(names) >= 5, f"alerts/dashboard reference suspiciously few metrics: {sorted(names)}"


def test_every_referenced_metric_is_registered_in_code() -> None:
    missing: dict[str, list[str]] = {}
    for where, expr in all_expressions():
        for name in METRIC.findall(expr):
            if not is_registered(name):
                missing.setdefault(name, []).append(where)
    assert not missing, (
        "metrics referenced by deploy/ but registered nowhere in "
        f"{', '.join(SOURCE_PACKAGES)} (renamed? not landed yet?): "
        + "; ".join(
            f"{n} (used in {', '.join(sorted(set(w)))})" for n, w in sorted(missing.items())
        )
    )


def test_fixed_label_values_occur_in_code() -> None:
    """outcome="dead_lettered" in an alert is only useful if the code emits exactly that value."""
    text = source_text()
    missing = []
    for where, expr in all_expressions():
        for metric, body in SELECTOR.findall(expr):
            for label, op, value in MATCHER.findall(body):
                if label in SCRAPE_LABELS or "$" in value:
                    continue
                values = value.split("|") if op in ("=~", "!~") else [value]
                for v in values:
                    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", v):
                        continue  # a real regex, not a list of literal values
                    if f'"{v}"' not in text and f"'{v}'" not in text:
                        missing.append(f'{where}: {metric}{{{label}{op}"{v}"}}')
    assert not missing, "label values no code emits: " + "; ".join(sorted(set(missing)))


# -- alert rules ---------------------------------------------------------------------------------
def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    assert rules, "alerts.yml holds no rules"
    names = [r.get("alert") for r in rules]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    for rule in rules:
        name = rule.get("alert")
        assert isinstance(name, str) and name, f"rule without an alert name: {rule}"
        assert isinstance(rule.get("expr"), str) and rule["expr"].strip(), f"{name}: no expr"
        assert "for" in rule and DURATION.match(str(rule["for"])), (
            f"{name}: 'for' missing or not a duration"
        )
        assert rule.get("labels", {}).get("severity") in SEVERITIES, (
            f"{name}: labels.severity not in {SEVERITIES}"
        )
        summary = rule.get("annotations", {}).get("summary")
        assert isinstance(summary, str) and summary.strip(), f"{name}: annotations.summary missing"


def test_prometheus_config_loads_the_rules_and_scrapes_both_services() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS.parent / rule_file).is_file(), (
            f"rule file {rule_file} not next to prometheus.yml"
        )
    targets = {
        t
        for job in config["scrape_configs"]
        for sc in job.get("static_configs", [])
        for t in sc["targets"]
    }
    assert any(t.endswith(":8000") for t in targets), "the API's /metrics on :8000 is not scraped"
    assert any(t.endswith(":9108") for t in targets), (
        "the indexer's metrics on :9108 are not scraped"
    )
    assert any(t.endswith(":9109") for t in targets), (
        "the recall monitor's metrics on :9109 are not scraped"
    )


# -- dashboard -----------------------------------------------------------------------------------
def test_dashboard_structure() -> None:
    board = dashboard()
    assert board.get("uid") and board.get("title")
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}  # no two panels drawn over each other
    for panel in panels:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                held = cells.setdefault((x, y), panel["title"])
                assert held == panel["title"], f"{panel['title']!r} overlaps {held!r}"
    datasource_uids = {d["uid"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, (
            f"{panel['title']}: outside the 24-column grid"
        )
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no queries"
        for target in panel["targets"]:
            assert target.get("expr"), f"panel {panel['title']!r} has a target without expr"
            uid = target.get("datasource", panel.get("datasource", {})).get("uid")
            assert uid in datasource_uids, (
                f"panel {panel['title']!r} uses datasource {uid!r}, not provisioned"
            )
    assert any(p["type"] == "heatmap" for p in panels), "the top-hit similarity heatmap is missing"


# -- docker-compose --------------------------------------------------------------------------------
def test_compose_mounts_existing_files_and_wires_the_stack() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    for needed in ("kafka", "redis", "indexer", "api", "prometheus", "grafana"):
        assert needed in services, f"docker-compose.yml lacks the {needed} service"
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = (
                volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            )
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    for name in ("indexer", "api"):
        env = services[name]["environment"]
        for key in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "SEMSEARCH_DATA_DIR"):
            assert key in env, f"{name} lacks {key}"
    data_mounts = {
        name: {
            v.split(":", 1)[0]
            for v in services[name]["volumes"]
            if v.split(":", 1)[1].startswith(services[name]["environment"]["SEMSEARCH_DATA_DIR"])
        }
        for name in ("indexer", "api")
    }
    assert data_mounts["indexer"] & data_mounts["api"], (
        "indexer and API must share the SEMSEARCH_DATA_DIR volume"
    )
    assert "index" in services["indexer"]["command"] and "serve" in services["api"]["command"]
    monitor = services["monitor"]
    assert monitor["command"][0] == "monitor" and "monitor" in monitor.get("profiles", [])
    assert {"SEMSEARCH_MONITOR_QUERIES", "SEMSEARCH_MONITOR_QRELS", "SEMSEARCH_MONITOR_STATE"} <= set(
        monitor["environment"]
    )
    state_dir = str(Path(monitor["environment"]["SEMSEARCH_MONITOR_STATE"]).parent)
    assert any(v.split(":")[1] == state_dir for v in monitor["volumes"]), (
        "the monitor's baselines must live on a volume, or a re-created container loses them"
    )


# -- promtool ---------------------------------------------------------------------------------------
PROMTOOL = shutil.which("promtool")
# Not a skip: `make install` and .ci/run install promtool, and an unchecked rule file is a bug.
needs_promtool = pytest.mark.usefixtures("promtool_installed")


@pytest.fixture
def promtool_installed() -> None:
    assert PROMTOOL is not None, "promtool is missing: apt-get install prometheus (make install tries)"


@needs_promtool
def test_promtool_check_rules_and_config() -> None:
    assert PROMTOOL is not None
    for args in (
        ["check", "rules", str(ALERTS)],
        ["check", "config", "--syntax-only", str(PROMETHEUS)],
    ):
        done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def _bucket_series(
    metric: str, healthy: dict[str, int], incident: dict[str, int], before: int, during: int
) -> list[dict[str, str]]:
    """Cumulative histogram buckets observed at a per-minute rate, changing shape at `before`."""
    series = []
    for le in [*healthy, "+Inf"]:
        h = healthy.get(le, max(healthy.values()))
        i = incident.get(le, max(incident.values()))
        series.append(
            {
                "series": f'{metric}_bucket{{le="{le}"}}',
                "values": f"0+{h}x{before} {before * h + i}+{i}x{during - 1}",
            }
        )
    top_h, top_i = max(healthy.values()), max(incident.values())
    series.append(
        {
            "series": f"{metric}_count",
            "values": f"0+{top_h}x{before} {before * top_h + top_i}+{top_i}x{during - 1}",
        }
    )
    return series


# One promtool unit test per incident shape: (alerts it covers, input series, alert expectations).
# Each expects the alert to be silent on the healthy series and firing on the incident.
def _scenarios() -> list[dict[str, Any]]:
    # Top-1 cosine healthy around 0.6, then (the 3 AM incident) everything around 0.15.
    healthy = {
        "0.0": 0,
        "0.1": 0,
        "0.2": 0,
        "0.3": 0,
        "0.4": 0,
        "0.5": 0,
        "0.6": 5,
        "0.7": 10,
        "0.8": 10,
        "0.9": 10,
        "1.0": 10,
    }
    incident = {
        "0.0": 0,
        "0.1": 0,
        "0.2": 10,
        "0.3": 10,
        "0.4": 10,
        "0.5": 10,
        "0.6": 10,
        "0.7": 10,
        "0.8": 10,
        "0.9": 10,
        "1.0": 10,
    }
    similarity = _bucket_series(
        "semsearch_top_similarity", healthy, incident, before=420, during=60
    )
    return [
        {
            "alerts": {
                "SemsearchTopSimilarityCollapse": "critical",
                "SemsearchTopSimilarityLow": "warning",
            },
            "series": similarity,
            "quiet_at": "400m",
            "firing_at": "475m",
            "labels": {},
        },
        {
            "alerts": {"SemsearchConsumerLagGrowing": "warning"},
            "series": [
                {
                    "series": 'semsearch_consumer_lag{index_id="a",topic="docs",partition="0"}',
                    "values": "0+20x90",
                },
                {
                    "series": 'semsearch_consumer_lag{index_id="b",topic="docs",partition="0"}',
                    "values": "1000x90",
                },
            ],
            "quiet_at": "20m",
            "firing_at": "60m",
            "labels": {"index_id": "a", "topic": "docs"},
        },
        {
            "alerts": {"SemsearchConsumerLagHigh": "warning"},
            "series": [
                {
                    "series": 'semsearch_consumer_lag{index_id="a",topic="docs",partition="0"}',
                    "values": "100x5 20000x30",
                },
                {
                    "series": 'semsearch_consumer_lag{index_id="b",topic="docs",partition="0"}',
                    "values": "100x35",
                },
            ],
            "quiet_at": "5m",
            "firing_at": "25m",
            "labels": {"index_id": "a", "topic": "docs"},
        },
        {
            "alerts": {"SemsearchServedIndexBehind": "warning"},
            "series": [
                # Two partitions of one API: 6,000 + 6,000 behind for 30 minutes.
                {
                    "series": 'semsearch_index_lag_events{instance="api:8000",topic="docs",partition="0"}',
                    "values": "10x5 6000x30",
                },
                {
                    "series": 'semsearch_index_lag_events{instance="api:8000",topic="docs",partition="1"}',
                    "values": "0x5 6000x30",
                },
                # Another API with a short spike only.
                {
                    "series": 'semsearch_index_lag_events{instance="api2:8000",topic="docs",partition="0"}',
                    "values": "0x5 20000x5 0x25",
                },
            ],
            "quiet_at": "12m",
            "firing_at": "25m",
            "labels": {"instance": "api:8000", "topic": "docs"},
        },
        {
            "alerts": {"SemsearchServedLagUnknown": "warning"},
            "series": [
                {"series": 'semsearch_index_lag_known{instance="api:8000"}', "values": "1x5 0x30"},
                {"series": 'semsearch_ready{instance="api:8000"}', "values": "1x35"},
                # Not serving anything yet: lag unknown is expected there.
                {"series": 'semsearch_index_lag_known{instance="api2:8000"}', "values": "0x35"},
                {"series": 'semsearch_ready{instance="api2:8000"}', "values": "0x35"},
            ],
            "quiet_at": "15m",
            "firing_at": "30m",
            "labels": {"instance": "api:8000"},
        },
        {
            "alerts": {"SemsearchNoSnapshot": "critical"},
            "series": [
                {"series": 'semsearch_snapshot_generation{index_id="a"}', "values": "1+1x10 11x30"},
                {
                    "series": 'semsearch_events_total{index_id="a",outcome="applied"}',
                    "values": "0+60x40",
                },
                {"series": 'semsearch_snapshot_generation{index_id="b"}', "values": "1+1x40"},
                {
                    "series": 'semsearch_events_total{index_id="b",outcome="applied"}',
                    "values": "0+60x40",
                },
            ],
            "quiet_at": "10m",
            "firing_at": "30m",
            "labels": {"index_id": "a"},
        },
        {
            "alerts": {"SemsearchDeadLetters": "warning"},
            "series": [
                {
                    "series": 'semsearch_events_total{index_id="a",outcome="applied"}',
                    "values": "0+60x40",
                },
                {
                    "series": 'semsearch_events_total{index_id="a",outcome="dead_lettered"}',
                    "values": "0x10 0+6x30",
                },
            ],
            "quiet_at": "10m",
            "firing_at": "35m",
            "labels": {"index_id": "a"},
        },
        {
            "alerts": {"SemsearchModelMismatch": "critical"},
            "series": [{"series": 'semsearch_model_mismatch{index_id="a"}', "values": "0x5 1x10"}],
            "quiet_at": "4m",
            "firing_at": "10m",
            "labels": {"index_id": "a"},
        },
        {
            "alerts": {"SemsearchMigrationGateFailed": "warning"},
            "series": [
                {"series": 'semsearch_migration_gate_passed{index_id="old"}', "values": "1x20"},
                {"series": 'semsearch_migration_gate_passed{index_id="new"}', "values": "_x5 0x15"},
            ],
            "quiet_at": "4m",
            "firing_at": "10m",
            "labels": {"index_id": "new"},
        },
        {
            "alerts": {"SemsearchMigrationStuck": "warning"},
            "series": [
                {
                    "series": 'semsearch_migration_state{semsearch_migration_state="catching-up"}',
                    "values": "0x10 1x400",
                },
                {
                    "series": 'semsearch_migration_state{semsearch_migration_state="idle"}',
                    "values": "1x10 0x400",
                },
            ],
            "quiet_at": "5h",
            "firing_at": "6h30m",
            "labels": {},
        },
        {
            "alerts": {"SemsearchApiNotReady": "critical"},
            "series": [{"series": 'semsearch_ready{instance="api:8000"}', "values": "1x5 0x20"}],
            "quiet_at": "5m",
            "firing_at": "20m",
            "labels": {"instance": "api:8000"},
        },
        {
            "alerts": {"SemsearchRedisUnreachable": "warning"},
            "series": [{"series": 'semsearch_redis_up{instance="api:8000"}', "values": "1x5 0x10"}],
            "quiet_at": "5m",
            "firing_at": "12m",
            "labels": {"instance": "api:8000"},
        },
        {
            "alerts": {"SemsearchKafkaLogReset": "warning"},
            "series": [
                {
                    "series": 'semsearch_log_reset_total{index_id="a",reason="cluster_changed"}',
                    "values": "0x30 1x30",
                },
                {"series": 'semsearch_log_reset_total{index_id="b",reason="cluster_changed"}', "values": "2x60"},
            ],
            "quiet_at": "25m",
            "firing_at": "35m",
            "labels": {"index_id": "a", "reason": "cluster_changed"},
        },
        {
            "alerts": {"SemsearchSnapshotFailing": "critical"},
            "series": [
                {"series": 'semsearch_snapshot_failures_total{index_id="a"}', "values": "0x20 0+1x30"},
                {"series": 'semsearch_snapshot_failures_total{index_id="b"}', "values": "3x50"},
            ],
            "quiet_at": "15m",
            "firing_at": "40m",
            "labels": {"index_id": "a"},
        },
        {
            "alerts": {"SemsearchIndexerRestarting": "critical"},
            "series": [
                {
                    "series": 'semsearch_indexer_restarts_total{error="SnapshotWriteError"}',
                    "values": "0x20 1 2 3 4 5 6x20",
                },
            ],
            "quiet_at": "15m",
            "firing_at": "28m",
            "labels": {"error": "SnapshotWriteError"},
        },
        {
            "alerts": {"SemsearchGenerationSkipped": "warning"},
            "series": [
                {"series": 'semsearch_generations_skipped_total{index_id="a"}', "values": "0x30 1x30"},
            ],
            "quiet_at": "25m",
            "firing_at": "35m",
            "labels": {"index_id": "a"},
        },
        {
            "alerts": {"SemsearchMigrationServiceDown": "warning"},
            "series": [{"series": "semsearch_migration_service_up", "values": "1x30 0x30"}],
            "quiet_at": "25m",
            "firing_at": "45m",
            "labels": {},
        },
        {
            "alerts": {"SemsearchRecallBelowBaseline": "warning"},
            "series": [
                {"series": 'semsearch_monitor_recall_at_5{index_id="a"}', "values": "0.8x10 0.7x20"},
                {"series": 'semsearch_monitor_recall_at_5_baseline{index_id="a"}', "values": "0.8x30"},
                # 2.5% below its baseline: within the tolerance.
                {"series": 'semsearch_monitor_recall_at_5{index_id="b"}', "values": "0.78x30"},
                {"series": 'semsearch_monitor_recall_at_5_baseline{index_id="b"}', "values": "0.8x30"},
            ],
            "quiet_at": "5m",
            "firing_at": "15m",
            "labels": {"index_id": "a"},
        },
        {
            "alerts": {"SemsearchIndexSizeJump": "warning"},
            "series": [
                {"series": 'semsearch_index_documents{instance="a:8000"}', "values": "1000x70 400x60"},
                # Growing 6% an hour: normal ingest.
                {"series": 'semsearch_index_documents{instance="b:8000"}', "values": "1000+1x130"},
                # Tiny indexes are not watched.
                {"series": 'semsearch_index_documents{instance="c:8000"}', "values": "10x70 2x60"},
            ],
            "quiet_at": "65m",
            "firing_at": "80m",
            "labels": {"instance": "a:8000"},
        },
        {
            # Period 1 h; the last success at 10 min, then only failures: silent until 2 h 10 min.
            "alerts": {"SemsearchMonitorNotRun": "warning"},
            "series": [
                {"series": 'semsearch_monitor_last_success_timestamp_seconds{instance="m:9109"}', "values": "0x9 600x150"},
                {"series": 'semsearch_monitor_started_timestamp_seconds{instance="m:9109"}', "values": "0x160"},
                {"series": 'semsearch_monitor_period_seconds{instance="m:9109"}', "values": "3600x160"},
                # Succeeds every minute.
                {"series": 'semsearch_monitor_last_success_timestamp_seconds{instance="ok:9109"}', "values": "0+60x160"},
                {"series": 'semsearch_monitor_started_timestamp_seconds{instance="ok:9109"}', "values": "0x160"},
                {"series": 'semsearch_monitor_period_seconds{instance="ok:9109"}', "values": "3600x160"},
            ],
            "quiet_at": "2h",
            "firing_at": "2h30m",
            "labels": {"instance": "m:9109"},
        },
        {
            # Never succeeded: counted from its start (at 30 min).
            "alerts": {"SemsearchMonitorNotRun": "warning"},
            "series": [
                {"series": 'semsearch_monitor_last_success_timestamp_seconds{instance="m:9109"}', "values": "_x30 0x200"},
                {"series": 'semsearch_monitor_started_timestamp_seconds{instance="m:9109"}', "values": "_x30 1800x200"},
                {"series": 'semsearch_monitor_period_seconds{instance="m:9109"}', "values": "_x30 3600x200"},
            ],
            "quiet_at": "2h25m",
            "firing_at": "2h40m",
            "labels": {"instance": "m:9109"},
        },
        {
            "alerts": {"SemsearchMonitorDown": "warning"},
            "series": [
                {"series": 'semsearch_monitor_period_seconds{instance="m:9109"}', "values": "3600x30 _x60"},
                {"series": 'semsearch_monitor_period_seconds{instance="ok:9109"}', "values": "3600x90"},
            ],
            "quiet_at": "25m",
            "firing_at": "60m",
            "labels": {"instance": "m:9109"},
        },
        {
            "alerts": {"SemsearchQueryLatencyHigh": "warning"},
            "series": _bucket_series(
                "semsearch_query_seconds",
                {"0.01": 0, "0.025": 50, "0.05": 60, "0.1": 60, "0.5": 60, "1.0": 60, "2.5": 60},
                {"0.01": 0, "0.025": 0, "0.05": 0, "0.1": 0, "0.5": 0, "1.0": 30, "2.5": 60},
                before=30,
                during=30,
            ),
            "quiet_at": "25m",
            "firing_at": "55m",
            "labels": {},
        },
    ]


@needs_promtool
def test_alerts_fire_on_their_incident_and_stay_quiet_otherwise(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    # Annotations hold $value templates; the unit tests are about expressions, so compare alerts on
    # labels only by testing a copy of the rules without annotations.
    data = yaml.safe_load(ALERTS.read_text())
    present = set()
    for group in data["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
            present.add(rule["alert"])
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(data))

    tests = []
    covered = set()
    for scenario in _scenarios():
        checks = []
        for alert, severity in scenario["alerts"].items():
            if alert not in present:
                continue  # dropped from alerts.yml; nothing to exercise
            covered.add(alert)
            labels = {**scenario["labels"], "severity": severity}
            if alert == "SemsearchQueryLatencyHigh":
                labels["mode"] = "vector"
            checks.append({"eval_time": scenario["quiet_at"], "alertname": alert, "exp_alerts": []})
            checks.append(
                {
                    "eval_time": scenario["firing_at"],
                    "alertname": alert,
                    "exp_alerts": [{"exp_labels": labels}],
                }
            )
        if not checks:
            continue
        series = scenario["series"]
        if any(a == "SemsearchQueryLatencyHigh" for a in scenario["alerts"]):
            series = [
                {
                    **s,
                    "series": s["series"].replace("{", '{mode="vector",', 1)
                    if "{" in s["series"]
                    else s["series"] + '{mode="vector"}',
                }
                for s in series
            ]
        tests.append({"interval": "1m", "input_series": series, "alert_rule_test": checks})
    assert covered, "no alert in alerts.yml has a unit-test scenario"
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests},
            sort_keys=False,
        )
    )
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(spec)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"promtool test rules failed:\n{done.stdout}\n{done.stderr}"
