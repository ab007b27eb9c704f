#!/usr/bin/env python3
# tests/harness/check_monitoring.py - checks the shipped Prometheus rules and Grafana
# dashboard (packaging/monitoring/) against the metrics dwasync defines, so that renaming a
# metric or a label without updating them fails a test. Used by test_ops_monitoring.sh.
#
#   check_monitoring.py static METRICS_H RULES DASHBOARD
#       the rule file's and the dashboard's structure; every metric they name is defined in
#       METRICS_H (a histogram's _bucket/_sum/_count count as its own), every label they use
#       in a selector, a by/on/without/ignoring/group clause, a legend or an annotation exists
#       on a metric of that expression (labels are the comments after each DW_M_* name), and
#       rate()/increase() read only counters.
#   check_monitoring.py exposed METRICS_H RULES DASHBOARD SCRAPE
#       every metric family the rules and dashboard name has a # TYPE line in SCRAPE (a real
#       /metrics body) and a series carrying each dwasync label they use on it.
#   check_monitoring.py strip RULES OUT
#       writes RULES with only the summary annotation kept (promtool test rules compares
#       annotations exactly; the descriptions are prose).
#
# Prints one line per finding; exits 1 when there is any, 2 on a usage error. Needs PyYAML
# (python3-yaml on Debian, installed by deps.sh).
import json
import re
import sys

import yaml

# Labels Prometheus adds to every scraped series ("job" too, but dwasync's own job label
# wins with honor_labels: true, so it is only allowed where metrics.h lists it).
TARGET_LABELS = {"instance"}
# Series Prometheus itself makes, with their labels.
SYNTHETIC = {"up": {"job", "instance"}}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
COUNTER_FUNCS = ("rate", "irate", "increase", "resets")
METRIC_RE = re.compile(r"\b(dwasync_[a-z0-9_]+|up)\b(?!\s*\()")
SELECTOR_RE = re.compile(r"\b(dwasync_[a-z0-9_]+|up)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING_RE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
COUNTER_ARG_RE = re.compile(r"\b(" + "|".join(COUNTER_FUNCS) + r")\s*\(\s*([a-z_:][a-z0-9_:]*)")
LEGEND_RE = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
ANNOTATION_LABEL_RE = re.compile(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)")
LABEL_VALUES_RE = re.compile(r"label_values\(\s*([a-z_][a-z0-9_]*)[^,]*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)")

findings = []


def finding(where, text):
    findings.append(f"{where}: {text}")


def load_metrics(path):
    """{name: set(labels)} from the DW_M_* defines and the label comments after them."""
    families = {}
    define = re.compile(r'^#define\s+DW_M_\w+\s+"(dwasync_[a-z0-9_]+)"\s*(?:/\*(.*?)\*/)?')
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = define.match(line)
            if not m:
                continue
            comment = re.split(r"[:;(]", m.group(2) or "")[0]
            labels = {w.strip() for w in comment.split(",")}
            families[m.group(1)] = {w for w in labels if re.fullmatch(r"[a-z_]+", w)}
    if not families:
        finding(path, "no DW_M_* metric names found")
    return families


def family_of(name, families):
    """The family a referenced series name belongs to, or None."""
    if name in families or name in SYNTHETIC:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in families:
            return name[: -len(suffix)]
    return None


def labels_of(name, families):
    fam = family_of(name, families)
    if fam is None:
        return set()
    labels = set(SYNTHETIC.get(fam) or families[fam]) | TARGET_LABELS
    if name.endswith("_bucket") and fam != name:
        labels.add("le")
    return labels


def strip_strings(expr):
    """The expression with string literals emptied (a regex value is not a metric name)."""
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def check_expr(where, expr, families, extra_labels=()):
    """Checks one PromQL expression; returns the labels its metrics carry."""
    bare = strip_strings(expr)
    names = set(METRIC_RE.findall(bare))
    dw_names = {n for n in names if n.startswith("dwasync_")}
    if not dw_names and "up" not in names:
        finding(where, f"names no dwasync metric: {expr}")
    available = set()
    for n in sorted(names):
        if family_of(n, families) is None:
            finding(where, f"metric {n} is not defined in metrics.h")
        available |= labels_of(n, families)
    # Selector labels belong to their own metric.
    for name, body in SELECTOR_RE.findall(expr):
        if family_of(name, families) is None:
            continue
        for label in MATCHER_RE.findall(strip_strings(body)):
            if label not in labels_of(name, families):
                finding(where, f"metric {name} has no label {label}")
    for _, body in GROUPING_RE.findall(bare):
        for label in (w.strip() for w in body.split(",")):
            if label and label not in available:
                finding(where, f"label {label} is on none of {', '.join(sorted(names))}")
    for label in extra_labels:
        if label not in available and label not in ("__name__",):
            finding(where, f"label {label} (legend or annotation) is on none of "
                    f"{', '.join(sorted(names))}")
    for func, arg in COUNTER_ARG_RE.findall(bare):
        if arg.startswith("dwasync_") and not arg.endswith(("_total",) + HISTOGRAM_SUFFIXES):
            finding(where, f"{func}() of {arg}, which is not a counter")
    return available


def check_rules(path, families):
    """The rule file's structure and every expression in it."""
    used = []
    try:
        doc = yaml.safe_load(open(path, encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        finding(path, f"cannot read: {e}")
        return used
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, list) or not groups:
        finding(path, "no groups")
        return used
    seen_groups, seen_alerts = set(), set()
    for g in groups:
        gname = g.get("name")
        if not gname or gname in seen_groups:
            finding(path, f"group name missing or repeated: {gname!r}")
        seen_groups.add(gname)
        for r in g.get("rules") or []:
            alert = r.get("alert")
            where = f"{path}: alert {alert}"
            if not alert or alert in seen_alerts:
                finding(path, f"alert name missing or repeated in group {gname}: {alert!r}")
                continue
            seen_alerts.add(alert)
            if not re.fullmatch(r"\d+[smh]", str(r.get("for", ""))):
                finding(where, "no for: duration")
            if (r.get("labels") or {}).get("severity") not in ("warning", "critical"):
                finding(where, "severity label is not warning or critical")
            ann = r.get("annotations") or {}
            for key in ("summary", "description"):
                if not ann.get(key):
                    finding(where, f"no {key} annotation")
            if "`dwasync " not in ann.get("description", "") and \
                    "`systemctl " not in ann.get("description", ""):
                finding(where, "the description names no command to run next")
            templ = " ".join(str(v) for v in ann.values())
            expr = str(r.get("expr", ""))
            check_expr(where, expr, families, ANNOTATION_LABEL_RE.findall(templ))
            used.append(expr)
    if len(seen_alerts) < 4:
        finding(path, f"only {len(seen_alerts)} alerts")
    return used


def check_dashboard(path, families):
    """The dashboard's structure and every query in it."""
    used = []
    try:
        doc = json.load(open(path, encoding="utf-8"))
    except (OSError, ValueError) as e:
        finding(path, f"cannot read: {e}")
        return used
    if not isinstance(doc.get("schemaVersion"), int) or doc["schemaVersion"] < 36:
        finding(path, "schemaVersion missing or older than 36")
    for key in ("title", "uid"):
        if not doc.get(key):
            finding(path, f"no {key}")
    variables = (doc.get("templating") or {}).get("list") or []
    ds_vars = [v["name"] for v in variables
               if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if not ds_vars:
        finding(path, "no Prometheus datasource variable")
    ds_uids = {"${%s}" % n for n in ds_vars} | {"$" + n for n in ds_vars}
    for v in variables:
        if v.get("type") != "query":
            continue
        where = f"{path}: variable {v.get('name')}"
        if (v.get("datasource") or {}).get("uid") not in ds_uids:
            finding(where, "does not query the datasource variable")
        q = v.get("definition") or (v.get("query") or {}).get("query", "")
        m = LABEL_VALUES_RE.search(q)
        if not m:
            finding(where, f"not a label_values() query: {q}")
            continue
        if m.group(2) not in check_expr(where, q, families):
            finding(where, f"metric {m.group(1)} has no label {m.group(2)}")
        used.append(q)
    ids = set()
    panels = list(doc.get("panels") or [])
    for p in panels:
        panels.extend(p.get("panels") or [])
    if sum(1 for p in panels if p.get("type") != "row") < 8:
        finding(path, "fewer than 8 panels")
    for p in panels:
        where = f"{path}: panel {p.get('title')!r}"
        if p.get("id") in ids or not isinstance(p.get("id"), int):
            finding(where, f"id missing or repeated: {p.get('id')!r}")
        ids.add(p.get("id"))
        gp = p.get("gridPos") or {}
        if not all(isinstance(gp.get(k), int) for k in "hwxy") or gp["x"] + gp["w"] > 24:
            finding(where, f"bad gridPos {gp}")
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") not in ds_uids:
            finding(where, "does not use the datasource variable")
        targets = p.get("targets") or []
        if not targets:
            finding(where, "no queries")
        for t in targets:
            if (t.get("datasource") or {}).get("uid") not in ds_uids:
                finding(where, f"query {t.get('refId')} does not use the datasource variable")
            expr = t.get("expr", "")
            check_expr(where, expr, families, LEGEND_RE.findall(t.get("legendFormat", "")))
            used.append(expr)
    return used


def referenced(exprs, families):
    """{family: set(dwasync labels used on it)} over expressions."""
    out = {}
    for expr in exprs:
        bare = strip_strings(expr)
        for n in METRIC_RE.findall(bare):
            fam = family_of(n, families)
            if fam and fam in families:
                out.setdefault(fam, set())
        for name, body in SELECTOR_RE.findall(expr):
            fam = family_of(name, families)
            if fam in families:
                out[fam] |= set(MATCHER_RE.findall(strip_strings(body))) - TARGET_LABELS
        names = [family_of(n, families) for n in METRIC_RE.findall(bare)]
        for _, body in GROUPING_RE.findall(bare):
            for label in (w.strip() for w in body.split(",")):
                for fam in names:
                    if fam in families and label in families[fam]:
                        out[fam].add(label)
    return out


def check_exposed(scrape_path, refs):
    """Every referenced family is exposed with a # TYPE line and the labels used on it."""
    text = open(scrape_path, encoding="utf-8").read()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    series_labels = {}
    for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$", text, re.M):
        series_labels.setdefault(m.group(1), []).append(
            set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2) or "")))
    for fam, labels in sorted(refs.items()):
        if fam not in types:
            finding(scrape_path, f"{fam} is not exposed (no # TYPE line)")
            continue
        want = types[fam]
        if fam.endswith("_total") and want != "counter":
            finding(scrape_path, f"{fam} is a {want}, not a counter")
        rows = [s for name, sets in series_labels.items() if family_of(name, {fam: ()}) == fam
                for s in sets]
        for label in sorted(labels):
            if not any(label in s for s in rows):
                finding(scrape_path, f"no series of {fam} carries label {label}")


def strip(rules_path, out_path):
    doc = yaml.safe_load(open(rules_path, encoding="utf-8"))
    for g in doc["groups"]:
        for r in g["rules"]:
            r["annotations"] = {"summary": r["annotations"]["summary"]}
    with open(out_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, sort_keys=False)


def main(argv):
    if len(argv) == 4 and argv[1] == "strip":
        strip(argv[2], argv[3])
        return 0
    if not ((len(argv) == 5 and argv[1] == "static") or (len(argv) == 6 and argv[1] == "exposed")):
        print("usage: check_monitoring.py static|exposed|strip ...", file=sys.stderr)
        return 2
    families = load_metrics(argv[2])
    exprs = check_rules(argv[3], families) + check_dashboard(argv[4], families)
    if argv[1] == "exposed":
        findings.clear()  # the static findings are the static mode's to report
        check_exposed(argv[5], referenced(exprs, families))
    for f in findings:
        print(f)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
