"""Monitoring: promtool checks, a real Prometheus scraping a real server, and metric names.

Every PromQL expression that deploy/ ships (the alert rules' signals, the dashboard's panels
and variable, the KEDA queries) is asked of a Prometheus that scraped a live server after a
few tiny requests, and must answer with data; every metric they name must be one the server
exports. Alert thresholds and `for` clauses are checked by promtool's unit tests
(`alerts.test.yml`).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import DEPLOY, load_all_yaml, load_yaml, need
from tests.server.conftest import LiveServer, free_port, wait_until

CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules" / "packcache.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "packcache.json"
SCALED_OBJECT = DEPLOY / "k8s" / "scaledobject.yaml"
ALERT_TESTS = Path(__file__).parent / "alerts.test.yml"
# Grafana's variables, as a short test run needs them: every replica, a window with 1 s scrapes.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "1m"}
# An alert is `signal <comparison> number`; the signal must have data, the comparison may not.
THRESHOLD = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*-?[0-9.]+(?:e[+-]?[0-9]+)?\s*$", re.DOTALL)
LABEL_VALUES = re.compile(r"^label_values\((?P<metric>[^,()]+),\s*\w+\)$")
PROMETHEUS_OWN = {"up"}  # made by Prometheus for every target, not by the server


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [need("promtool", "prometheus"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_scrape_config_and_rules() -> None:
    for args in (("check", "config", CONFIG), ("check", "rules", RULES)):
        done = promtool(*args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_fire_on_what_should_page_and_only_then() -> None:
    done = promtool("test", "rules", ALERT_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the expressions deploy/ ships ----------------------------------------------------------


def rule_signals() -> dict[str, str]:
    rules = [r for g in load_yaml(RULES)["groups"] for r in g["rules"]]
    return {f"alert {r['alert']}": THRESHOLD.sub("", r["expr"].strip()) for r in rules}


def dashboard_expressions() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    out: dict[str, str] = {}
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop()
        panels += panel.get("panels", [])  # inside rows
        for t in panel.get("targets", []):
            out[f"panel {panel['title']!r} {t['refId']}"] = t["expr"]
    for var in dashboard["templating"]["list"]:
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = LABEL_VALUES.match(query.strip())
        assert match, f"variable {var['name']}: not a label_values() query: {query}"
        out[f"variable {var['name']}"] = match["metric"].strip()
    for name, value in GRAFANA_VARIABLES.items():
        out = {k: v.replace(name, value) for k, v in out.items()}
    return {k: re.sub(r"\$\{?instance\}?", ".*", v) for k, v in out.items()}


def keda_queries() -> dict[str, str]:
    (scaled,) = load_all_yaml(SCALED_OBJECT)
    return {f"keda {t['name']}": t["metadata"]["query"] for t in scaled["spec"]["triggers"]}


def shipped_expressions() -> dict[str, str]:
    return rule_signals() | dashboard_expressions() | keda_queries()


def metric_names(expr: str) -> set[str]:
    """Our names anywhere, and any name right before a `{` selector."""
    return set(re.findall(r"\bpackcache_[a-z0-9_]+", expr)) | set(
        re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr)
    )


def test_the_dashboard_shows_what_the_issue_lists() -> None:
    used = set().union(*map(metric_names, dashboard_expressions().values()))
    for name in [
        "packcache_frame_latency_seconds_bucket",  # per-frame latency by policy
        "packcache_time_to_first_frame_seconds_bucket",
        "packcache_frames_generated_total",  # frames per second
        "packcache_gpu_memory_allocated_bytes",
        "packcache_gpu_memory_reserved_bytes",
        "packcache_gpu_memory_peak_allocated_bytes",
        "packcache_kv_cache_bytes",
        "packcache_kv_cache_budget_bytes",
        "packcache_num_requests_running",
        "packcache_num_requests_waiting",
        "packcache_requests_rejected_total",
        "packcache_requests_total",  # failures
        "packcache_realtime_factor_bucket",
    ]:
        assert name in used, name


# -- a live server and a real Prometheus scraping it ----------------------------------------


class Prometheus:
    """`prometheus` on a free loopback port, scraping `target` every second."""

    def __init__(self, binary: str, folder: Path, target: str) -> None:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "packcache",
                    # the label a ServiceMonitor adds, as the KEDA queries expect
                    "static_configs": [{"targets": [target], "labels": {"namespace": "packcache"}}],
                }
            ],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = (folder / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=10)
        wait_until(self._ready, timeout=30, interval=0.1)

    def _ready(self) -> bool:
        assert self.proc.poll() is None, "prometheus exited; see prometheus.log"
        try:
            return self.client.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = self.client.get("/api/v1/query", params={"query": expr}).json()
        assert reply["status"] == "success", f"{expr}: {reply}"
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.client.close()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("data")).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def prometheus(
    server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """Scraping `server` before and after two tiny requests, so rates and quantiles have data."""
    prom = Prometheus(
        need("prometheus", "prometheus"),
        tmp_path_factory.mktemp("prometheus"),
        server.url.removeprefix("http://"),
    )
    try:
        wait_until(lambda: bool(prom.query('up{job="packcache"} == 1')), timeout=30, interval=0.2)
        videos = [server.create(cache_policy=p).json() for p in ("packcache", "full")]
        for video in videos:
            assert server.wait_done(video["id"])["status"] == "completed"
        scraped = time.time() + 2.5  # a few scrapes after the last counter moved
        wait_until(lambda: time.time() > scraped and rules_evaluated(prom), timeout=30)
        yield prom
    finally:
        prom.stop()


def rules_evaluated(prom: Prometheus) -> bool:
    groups = prom.client.get("/api/v1/rules").json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    return bool(rules) and all(r.get("lastEvaluation", "").startswith("20") for r in rules)


def test_prometheus_loads_and_evaluates_every_rule(prometheus: Prometheus) -> None:
    groups = prometheus.client.get("/api/v1/rules").json()["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == {k.removeprefix("alert ") for k in rule_signals()}
    for name, rule in loaded.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))
        assert rule["state"] == "inactive", name  # a healthy server pages nobody


@pytest.mark.parametrize("where", sorted(shipped_expressions()))
def test_every_shipped_expression_has_data(prometheus: Prometheus, where: str) -> None:
    expr = shipped_expressions()[where]
    result = prometheus.query(expr)
    assert result, f"{where}: no data for {expr}"
    values = [float(series["value"][1]) for series in result]
    assert any(math.isfinite(v) for v in values), f"{where}: only {values} for {expr}"


def test_every_metric_they_name_is_exported(server: LiveServer) -> None:
    text = server.client.get("/metrics").text
    exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    for where, expr in shipped_expressions().items():
        unknown = metric_names(expr) - exported - PROMETHEUS_OWN
        assert not unknown, f"{where} names {sorted(unknown)}, which the server does not export"
