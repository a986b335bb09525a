"""The metric names and label matchers a PromQL expression uses, and the catalog of the
series jobmesh exports, so that alert rules and dashboards can be checked against it.

The tokenizer is deliberately small: it knows PromQL's keywords, functions (an identifier
followed by ``(``), grouping clauses (``by (…)``, ``on (…)``…), range and subquery brackets,
strings and Grafana ``$variables``; whatever identifier is left is a metric name."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import Counter, Gauge, Histogram

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "jobmesh.json"
SCRAPE_JOBS = {"jobmesh-monitor", "jobmesh-scheduler"}

KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Series Prometheus writes itself for every scrape target, and the labels it attaches.
SYNTHETIC = {"up": set[str]()}
TARGET_LABELS = {"job", "instance"}

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)"""
    r"|(?P<braces>\{[^}]*\})"
    r"|(?P<brackets>\[[^\]]*\])"
    r"|(?P<variable>\$\{[^}]*\}|\$\w+)"
    r"|(?P<number>(?<![\w.])\d[\w.]*)"
    r"|(?P<ident>[A-Za-z_:][\w:]*)"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)",
    re.S,
)
_MATCHER = re.compile(r"""\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*,?""")


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass
class Selector:
    metric: str
    matchers: list[Matcher] = field(default_factory=list)


@dataclass
class Parsed:
    selectors: list[Selector] = field(default_factory=list)
    grouping_labels: set[str] = field(default_factory=set)


def matchers(block: str) -> list[Matcher]:
    """``{a="x", b=~"y|z"}`` → its matchers; anything unparsable raises."""
    inner, found, pos = block.strip()[1:-1], [], 0
    while pos < len(inner):
        m = _MATCHER.match(inner, pos)
        if m is None:
            if inner[pos:].strip():
                raise ValueError(f"cannot read label matchers {block!r}")
            break
        found.append(Matcher(m.group(1), m.group(2), m.group(3)[1:-1]))
        pos = m.end()
    return found


def parse(expr: str) -> Parsed:
    """The selectors (metric name and matchers) and the grouping labels of ``expr``."""
    tokens = [(m.lastgroup or "", m.group()) for m in _TOKEN.finditer(expr) if m.lastgroup != "space"]
    parsed = Parsed()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        after = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "braces":
            raise ValueError(f"a selector without a metric name: {text} in {expr!r}")
        if kind != "ident" or text in KEYWORDS:
            i += 1
            continue
        if text in GROUPING:
            if after[1] == "(":
                j = i + 2
                while j < len(tokens) and tokens[j][1] != ")":
                    if tokens[j][0] == "ident":
                        parsed.grouping_labels.add(tokens[j][1])
                    j += 1
                i = j + 1
            else:
                i += 1
            continue
        if after[1] == "(" or (after[0] == "ident" and after[1] in GROUPING):  # a function, an aggregation
            i += 1
            continue
        selector = Selector(text)
        if after[0] == "braces":
            selector.matchers = matchers(after[1])
            i += 1
        parsed.selectors.append(selector)
        i += 1
    return parsed


# The catalog: sample name → its label names ------------------------------------------------


def catalog_of(instruments: Iterable[object]) -> dict[str, set[str]]:
    """The sample names (``_total``, ``_bucket``…) and label names the instruments among
    ``instruments`` export (anything else is ignored)."""
    series: dict[str, set[str]] = {}
    for instrument in instruments:
        if not isinstance(instrument, Counter | Gauge | Histogram):
            continue
        name: str = instrument._name
        labels = set(instrument._labelnames)
        if isinstance(instrument, Counter):
            series[name + "_total"] = labels
            series[name + "_created"] = labels
        elif isinstance(instrument, Gauge):
            series[name] = labels
        elif isinstance(instrument, Histogram):
            series[name + "_bucket"] = labels | {"le"}
            for suffix in ("_count", "_sum", "_created"):
                series[name + suffix] = labels
    return series


def catalog_of_exposition(text: str) -> dict[str, set[str]]:
    """The sample names and label names in a /metrics body (the text format)."""
    from prometheus_client.parser import text_string_to_metric_families

    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def problems(expr: str, catalog: dict[str, set[str]], values: dict[str, set[str]] | None = None) -> list[str]:
    """What in ``expr`` the catalog does not export: unknown metrics, unknown labels in a
    matcher or a grouping clause, and (for the labels in ``values``) unknown label values."""
    known = {**catalog, **SYNTHETIC}
    parsed = parse(expr)
    found: list[str] = []
    if not parsed.selectors:
        found.append(f"no metric in {expr!r}")
    used_labels = set(TARGET_LABELS)
    for selector in parsed.selectors:
        if selector.metric not in known:
            found.append(f"unknown metric {selector.metric}")
            continue
        labels = known[selector.metric] | TARGET_LABELS
        used_labels |= labels
        for m in selector.matchers:
            if m.label not in labels:
                found.append(f"{selector.metric} has no label {m.label}")
            elif values and m.label in values and "$" not in m.value and m.value:
                wanted = m.value.split("|") if m.op in ("=~", "!~") else [m.value]
                for value in wanted:
                    if value not in values[m.label]:
                        found.append(f"{selector.metric}{{{m.label}}} never has the value {value!r}")
    for label in parsed.grouping_labels - used_labels:
        found.append(f"grouping by {label}, which no metric of the expression has")
    return found


# The deploy/ files -------------------------------------------------------------------------


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target, nested row panels included."""
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((f"panel {panel['title']!r} target {target['refId']}", target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return found


def deployed_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule and every dashboard panel target."""
    rules = [(f"alert {rule['alert']}", str(rule["expr"])) for rule in alert_rules()]
    return rules + dashboard_queries(json.loads(DASHBOARD.read_text()))
