"""Write config/grafana/dashboards/geopush.json (run after changing a panel; the JSON is committed)."""

import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "prometheus"}
PANELS = [
    (
        "Consumer lag per partition",
        "timeseries",
        12,
        [("max by (group, topic, partition) (geopush_consumer_lag)", "{{group}} {{topic}}[{{partition}}]")],
    ),
    (
        "Lag per group and topic",
        "timeseries",
        12,
        [("sum by (group, topic) (max by (group, topic, partition) (geopush_consumer_lag))", "{{group}} {{topic}}")],
    ),
    (
        "Pings per second",
        "timeseries",
        8,
        [
            ("sum(rate(geopush_pings_total[1m]))", "pings"),
            ("sum(rate(geopush_pings_matched_total[1m]))", "in a fence"),
            ("sum(rate(geopush_pings_invalid_total[1m]))", "dead-lettered"),
        ],
    ),
    (
        "Dead letters by reason",
        "timeseries",
        8,
        [("sum by (reason) (rate(geopush_pings_invalid_total[5m]))", "{{reason}}")],
    ),
    ("Transitions", "timeseries", 8, [("sum by (kind) (rate(geopush_transitions_total[5m]))", "{{kind}}")]),
    (
        "Decisions by reason",
        "timeseries",
        12,
        [("sum by (outcome, reason) (rate(geopush_decisions_total[5m]))", "{{outcome}} {{reason}}")],
    ),
    (
        "Deliveries by result",
        "timeseries",
        12,
        [("sum by (result) (rate(geopush_deliveries_total[5m]))", "{{result}}")],
    ),
    (
        "FCM request latency",
        "timeseries",
        8,
        [
            ("histogram_quantile(0.5, sum by (le) (rate(geopush_fcm_request_seconds_bucket[5m])))", "p50"),
            ("histogram_quantile(0.99, sum by (le) (rate(geopush_fcm_request_seconds_bucket[5m])))", "p99"),
        ],
    ),
    ("FCM retries by code", "timeseries", 8, [("sum by (code) (rate(geopush_fcm_retries_total[5m]))", "{{code}}")]),
    (
        "Ping to decision latency",
        "timeseries",
        8,
        [
            ("histogram_quantile(0.5, sum by (le) (rate(geopush_ping_to_decision_seconds_bucket[5m])))", "p50"),
            ("histogram_quantile(0.99, sum by (le) (rate(geopush_ping_to_decision_seconds_bucket[5m])))", "p99"),
        ],
    ),
    (
        "Worker pauses: decision-step poll phases and GC (p99)",
        "timeseries",
        12,
        [
            (
                "histogram_quantile(0.99, sum by (le, phase) (rate(geopush_decide_poll_phase_seconds_bucket[5m])))",
                "poll {{phase}}",
            ),
            (
                "histogram_quantile(0.99, sum by (le, generation) (rate(geopush_gc_pause_seconds_bucket[5m])))",
                "gc gen{{generation}}",
            ),
        ],
    ),
    ("Catalog version", "table", 8, [("max by (instance, version) (geopush_catalog_info)", "{{version}}")]),
    ("Fences", "stat", 4, [("max(geopush_catalog_fences)", "fences")]),
    ("Catalog build failures", "stat", 4, [("sum(increase(geopush_catalog_failures_total[1h]))", "failures")]),
    ("Table keys", "timeseries", 8, [("sum by (table) (geopush_table_keys)", "{{table}}")]),
    ("Partitions per worker", "timeseries", 8, [("geopush_assigned_partitions", "{{instance}} {{topic}}")]),
    ("Lag refresh errors", "stat", 8, [("sum(increase(geopush_lag_refresh_errors_total[15m]))", "errors")]),
]


def dashboard() -> dict:
    panels, x, y = [], 0, 0
    for i, (title, kind, width, targets) in enumerate(PANELS, start=1):
        if x + width > 24:
            x, y = 0, y + 8
        panels.append(
            {
                "id": i,
                "title": title,
                "type": kind,
                "datasource": DS,
                "gridPos": {"x": x, "y": y, "w": width, "h": 8},
                "targets": [
                    {"refId": chr(65 + j), "datasource": DS, "expr": e, "legendFormat": leg}
                    for j, (e, leg) in enumerate(targets)
                ],
            }
        )
        x += width
    return {
        "uid": "geopush",
        "title": "geopush: stream lag and delivery health",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "tags": ["geopush"],
        "panels": panels,
    }


if __name__ == "__main__":
    out = Path("config/grafana/dashboards/geopush.json")
    out.write_text(json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n")
