"""report.html: one self-contained page (no network, no external assets) for people.

Top to bottom: the verdict and its one-line reason, the run's context (targets, stage, selection,
version, start and elapsed time, counts), the checks (failing first, observed against threshold),
what changed since a baseline run, the difference signatures as clusters - each with a side-by-side
example (status, headers with the differing ones marked, the body difference by JSON path or as a
unified diff, and a ``curl`` per target) - then every case that did not match (all of them: a
client-side list, grouped by signature, paginated, with a filter over id, suite, outcome and
signature), error signatures, accepted differences, latency (both targets' CDFs as inline SVG with
p50/p90/p99 marked), and the learned noise, collapsed, at the bottom.

Safety: every value that came from a target is either escaped into HTML here (`escape`) or carried
as data in ``<script type="application/json">`` (`script_json`: ``<``, ``>``, ``&`` and the JS line
separators escaped, so no body can close the element) and put on the page with ``textContent``.
The page's one inline script is pinned by a Content-Security-Policy hash; nothing else can run and
nothing is fetched (``default-src 'none'``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape
from typing import IO, Any

from flamingo.judge import value_text

#: Body characters of a side-by-side example embedded in the page.
EXAMPLE_BODY_CHARS = 8 * 1024
#: Clusters that get a side-by-side example on the page (the largest first).
MAX_EXAMPLES = 200
#: Characters of a case's one-line summary in the case list.
CASE_SUMMARY_CHARS = 600

_CSS = """
:root{--bad:#b00020;--ok:#176f2c;--warn:#9a5b00;--mute:#666;--line:#ddd}
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:84em;color:#222;padding:0 1em}
h1{margin:.2em 0} h2{margin-top:1.6em;border-bottom:1px solid var(--line)}
table{border-collapse:collapse;margin:.6em 0;width:100%}
th,td{border:1px solid var(--line);padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f6f6f6} code,pre,.mono{font:12px/1.4 ui-monospace,monospace}
pre{white-space:pre-wrap;word-break:break-all;margin:0;max-height:30em;overflow:auto}
.pass{color:var(--ok)} .fail,.error{color:var(--bad)} .diff{color:var(--warn)}
.verdict{font-size:1.7em;font-weight:700;margin:.2em 0} .reason{font-size:1.1em}
.ctx td:first-child{width:12em;color:var(--mute)} .num{text-align:right}
.hl td{background:#fff3cd} .chg td{background:#f7f7f7} .absent{color:var(--mute)}
.add{background:#e6ffec} .del{background:#ffebe9} .hunk{color:#0550ae}
.cluster{border:1px solid var(--line);border-radius:6px;padding:.6em 1em;margin:1em 0}
.cluster h3{margin:.2em 0;font-size:1.05em} .meta{color:var(--mute)}
.sbs{display:grid;grid-template-columns:1fr 1fr;gap:.8em} .sbs>div{min-width:0}
details>summary{cursor:pointer} .bar{display:flex;gap:.6em;flex-wrap:wrap;align-items:center}
input[type=search]{min-width:24em;padding:.3em} .pager button{padding:.2em .8em}
.new{color:var(--bad);font-weight:600} .gone{color:var(--ok)}
svg text{font:11px system-ui,sans-serif}
"""

# The page's only script: the case list (filter, grouping by signature, pagination). It reads the
# embedded JSON and writes text nodes only (textContent), never HTML.
_JS = r"""
(function(){
"use strict";
const data = JSON.parse(document.getElementById("cases-data").textContent);
const sigs = JSON.parse(document.getElementById("signatures-data").textContent);
const rank = new Map(sigs.map((s, i) => [s.id, i]));
const OUT = ["match", "diff", "fail", "error"];
const rows = data.map(r => ({id: r[0], suite: r[1], outcome: OUT[r[2]], sigs: r[3], what: r[4],
  req: r[5]}));
rows.forEach(r => { r.rank = r.sigs.length ? Math.min(...r.sigs.map(s => rank.has(s) ?
  rank.get(s) : 1e9)) : 1e9 + 1;
  r.hay = [r.id, r.suite, r.outcome, r.req, r.what, ...r.sigs,
    ...r.sigs.map(s => rank.has(s) ? sigs[rank.get(s)].text : "")].join("\n").toLowerCase(); });
const q = document.getElementById("case-filter"), oc = document.getElementById("case-outcome");
const sg = document.getElementById("case-signature"), grp = document.getElementById("case-group");
const body = document.getElementById("case-rows"), count = document.getElementById("case-count");
const pageNo = document.getElementById("case-page");
const PAGE = 100; let page = 0, shown = rows;
for (const s of sigs) { const o = document.createElement("option"); o.value = s.id;
  o.textContent = s.count + " · " + s.text; sg.appendChild(o); }
function cell(tr, text, cls) { const td = document.createElement("td");
  td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td; }
function apply() {
  const words = q.value.toLowerCase().split(/\s+/).filter(Boolean);
  const want = oc.value, sig = sg.value;
  shown = rows.filter(r => (!want || r.outcome === want) && (!sig || r.sigs.includes(sig)) &&
    words.every(w => r.hay.includes(w)));
  if (grp.checked) shown = shown.slice().sort((a, b) => a.rank - b.rank ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  page = 0; draw();
}
function draw() {
  const pages = Math.max(1, Math.ceil(shown.length / PAGE));
  page = Math.min(Math.max(page, 0), pages - 1);
  body.replaceChildren();
  let group = null;
  for (const r of shown.slice(page * PAGE, page * PAGE + PAGE)) {
    const first = r.sigs.length ? r.sigs[0] : "";
    if (grp.checked && first !== group) { group = first;
      const tr = document.createElement("tr"); tr.className = "group";
      const td = cell(tr, first && rank.has(first) ? sigs[rank.get(first)].text + " (" +
        first + ")" : (first || "no difference signature: " + r.outcome));
      td.colSpan = 4; td.style.fontWeight = "600"; body.appendChild(tr); }
    const tr = document.createElement("tr"); tr.className = "case";
    const id = cell(tr, r.id, "mono"); id.title = r.req;
    cell(tr, r.suite); cell(tr, r.outcome, r.outcome);
    const what = document.createElement("pre"); what.textContent = r.what;
    tr.appendChild(document.createElement("td")).appendChild(what);
    body.appendChild(tr);
  }
  count.textContent = shown.length === rows.length ? rows.length + " cases" :
    shown.length + " of " + rows.length + " cases";
  pageNo.textContent = "page " + (page + 1) + " of " + pages;
}
document.getElementById("case-prev").onclick = () => { page--; draw(); };
document.getElementById("case-next").onclick = () => { page++; draw(); };
q.addEventListener("input", apply); oc.addEventListener("change", apply);
sg.addEventListener("change", apply); grp.addEventListener("change", apply);
for (const a of document.querySelectorAll("a[data-sig]")) a.addEventListener("click", () => {
  sg.value = a.dataset.sig; q.value = ""; oc.value = ""; apply(); });
apply();
})();
"""

_JS_HASH = base64.b64encode(hashlib.sha256(_JS.encode()).digest()).decode()
_CSP = (
    f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{_JS_HASH}'"
)


def script_json(value: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&``
    (so neither ``</script>`` nor ``<!--`` can appear) and no JS line separators. These
    characters only occur inside JSON strings, where the ``\\u`` escapes mean the same."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _e(value: Any) -> str:
    return escape("—" if value is None else str(value))


@dataclass(frozen=True)
class Page:
    """Everything the page shows, already redacted."""

    gate: dict[str, Any]
    clusters: list[dict[str, Any]] = field(default_factory=list)  # see `files.SignatureIndex`
    errors: list[dict[str, Any]] = field(default_factory=list)
    latency_cdf: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    evidence: dict[str, Any] | None = None
    version: str = ""


# -- sections -------------------------------------------------------------------------------


def _head(gate: dict[str, Any]) -> str:
    verdict = str(gate.get("verdict", "error"))
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>flamingo: {_e(verdict)} · {_e(gate.get('stage') or 'default')}</title>"
        f"<style>{_CSS}</style></head><body>"
    )


def _verdict(gate: dict[str, Any]) -> str:
    verdict = str(gate.get("verdict", "error"))
    reason = gate.get("reason") or _default_reason(gate)
    return (
        f"<h1>flamingo run</h1><p id='verdict' class='verdict {_e(verdict)}'>"
        f"{_e(verdict.upper())}</p><p id='reason' class='reason'>{_e(reason)}</p>"
    )


def _default_reason(gate: dict[str, Any]) -> str:
    failing = [c for c in gate.get("checks", []) if not c.get("passed")]
    if gate.get("verdict") == "pass":
        return f"all {len(gate.get('checks', []))} checks passed"
    if failing:
        c = failing[0]
        observed, threshold = value_text(c["observed"]), value_text(c["threshold"])
        return f"{c['name']}: observed {observed}, threshold {threshold}"
    return ""


def _context(page: Page) -> str:
    gate = page.gate
    totals = gate.get("totals", {})
    targets = gate.get("targets", {})
    selection = gate.get("selection") or {}
    chosen = ", ".join(f"{k} {v}" for k, v in selection.items() if v) or "all cases"
    counts = " · ".join(f"{k} {v}" for k, v in totals.items())
    elapsed = gate.get("elapsed_s")
    rows = [
        ("old", targets.get("old")),
        ("new", targets.get("new")),
        ("stage", gate.get("stage") or "default"),
        ("selection", chosen),
        ("flamingo", page.version or gate.get("flamingo_version")),
        ("started", gate.get("started_at")),
        ("elapsed", f"{elapsed:.1f} s" if isinstance(elapsed, int | float) else None),
        ("cases", counts),
    ]
    settings = gate.get("settings")
    if settings:
        rows.append(("settings", ", ".join(f"{k} {v}" for k, v in settings.items())))
    if page.evidence:
        ev = page.evidence
        rows.append(
            (
                "evidence",
                f"{ev['file']}: {ev['cases']} cases, {ev['bytes']:,} bytes"
                + (f", {ev['omitted']} omitted (store full)" if ev.get("omitted") else "")
                + (f", {ev['reduced']} with bodies cut short" if ev.get("reduced") else ""),
            )
        )
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table id='context' class='ctx'>{body}</table>"


def _pct(value: Any) -> str:
    """0.999 -> 99.9%, 0.851485 -> 85.15%: as many digits as the value needs, up to 4."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return value_text(value)
    return f"{value * 100:.4g}%"


def _rate_counts(name: str, totals: dict[str, Any]) -> str:
    """The ratio behind a rate check: ``86 of 101 judged``."""
    try:
        if name == "min_match_rate":
            return f"{totals['match']} of {totals['cases'] - totals['error']} judged"
        if name == "max_error_rate":
            return f"{totals['error']} of {totals['cases']}"
        if name == "max_fallback_rate" and "fallback" in totals:
            return f"{totals['fallback']} of {totals['cases']}"
    except (KeyError, TypeError):
        pass
    return ""


def _checks(gate: dict[str, Any]) -> str:
    checks = sorted(gate.get("checks", []), key=lambda c: bool(c.get("passed")))
    rows = []
    for c in checks:
        ok = "pass" if c.get("passed") else "fail"
        name = str(c.get("name", ""))
        observed, threshold = c.get("observed"), c.get("threshold")
        if "rate" in name and isinstance(observed, int | float):
            shown_obs, shown_thr = _pct(observed), _pct(threshold)
            counts = _rate_counts(name, gate.get("totals", {}))
            if counts:
                shown_obs += f" ({counts})"
        elif "ratio" in name and isinstance(observed, int | float):
            shown_obs, shown_thr = f"{observed:.3f}×", f"{value_text(threshold)}×"
        else:
            shown_obs, shown_thr = value_text(observed), value_text(threshold)
        op = "≥" if name.startswith("min_") else "≤"
        rows.append(
            f"<tr class='check-{ok}'><td class='{ok}'><b>{ok.upper()}</b></td><td>{_e(name)}</td>"
            f"<td class='num'>{_e(shown_obs)}</td><td>{op} {_e(shown_thr)}</td></tr>"
        )
    return (
        "<h2>Checks</h2><table id='checks'><tr><th>result</th><th>check</th>"
        f"<th>observed</th><th>threshold</th></tr>{''.join(rows)}</table>"
    )


def _baseline(gate: dict[str, Any]) -> str:
    base = gate.get("baseline")
    if not base:
        return ""
    parts = [f"<h2 id='baseline'>Since the baseline</h2><p>baseline run: {_e(base.get('run'))}</p>"]
    for key, label, cls in (
        ("new", "new signatures", "new"),
        ("changed", "changed in count", ""),
        ("disappeared", "disappeared", "gone"),
    ):
        items = base.get(key, [])
        parts.append(f"<h3 class='{cls}'>{len(items)} {label}</h3>")
        if items:
            rows = "".join(
                f"<tr><td class='mono'>{_e(i.get('id'))}</td><td>{_e(i.get('template'))}</td>"
                f"<td>{_e(i.get('description'))}</td>"
                f"<td class='num'>{_e(i.get('baseline_count', ''))}"
                f"</td><td class='num'>{_e(i.get('count', ''))}</td></tr>"
                for i in items
            )
            parts.append(
                "<table><tr><th>signature</th><th>template</th><th>difference</th>"
                f"<th>baseline</th><th>now</th></tr>{rows}</table>"
            )
    return "".join(parts)


def _header_table(rows: list[dict[str, Any]]) -> str:
    out = ["<table class='headers'><tr><th>header</th><th>old</th><th>new</th></tr>"]
    for r in rows:
        cls = " class='hl'" if r["differs"] else " class='chg'" if r["changed"] else ""

        def cell(value: Any) -> str:
            if value is None:
                return "<td class='absent'>absent</td>"
            return f"<td class='mono'>{_e(value)}</td>"

        out.append(
            f"<tr{cls}><td class='mono'>{_e(r['name'])}</td>{cell(r['old'])}{cell(r['new'])}</tr>"
        )
    out.append("</table>")
    return "".join(out)


def _body_diff(view: dict[str, Any]) -> str:
    body = view["body"]
    kind = body["kind"]
    if kind == "json":
        rows = "".join(
            f"<tr><td class='mono'>{_e(r['path'])}</td>"
            + "".join(
                "<td class='absent'>absent</td>"
                if r[s] is None
                else f"<td class='mono'>{_e(r[s])}</td>"
                for s in ("old", "new")
            )
            + "</tr>"
            for r in body["rows"]
        )
        more = (
            f"<p class='meta'>{body['total'] - len(body['rows'])} more paths</p>"
            if body["total"] > len(body["rows"])
            else ""
        )
        return (
            "<h4>body (JSON, by path)</h4><table class='jsondiff'><tr><th>path</th><th>old</th>"
            f"<th>new</th></tr>{rows}</table>{more}"
        )
    if kind == "text":
        lines = []
        for line in body["lines"]:
            cls = (
                "hunk"
                if line.startswith("@@")
                else "add"
                if line.startswith("+") and not line.startswith("+++")
                else "del"
                if line.startswith("-") and not line.startswith("---")
                else ""
            )
            lines.append(f"<span class='{cls}'>{_e(line)}</span>" if cls else _e(line))
        more = (
            f"\n… {body['total'] - len(body['lines'])} more lines"
            if body["total"] > len(body["lines"])
            else ""
        )
        shown = "\n".join(lines)
        return f"<h4>body (unified diff)</h4><pre class='textdiff'>{shown}{_e(more)}</pre>"
    if kind == "error":
        return ""
    return "<p class='meta'>bodies equal as kept</p>"


def _side(view: dict[str, Any], side: str) -> str:
    status, reason, message = view["status"][side]
    req = view["requests"][side]
    body = view["bodies"].get(side) or {}
    text = str(body.get("text", ""))
    cut = len(text) > EXAMPLE_BODY_CHARS
    info = f"{body.get('bytes', 0):,} bytes"
    if body.get("sha256"):
        info += f", sha256 {body['sha256']}"
    if body.get("note"):
        info += f", {body['note']}"
    head = f"{status} {reason or ''}" if status is not None else f"error: {reason}: {message}"
    return (
        f"<div><h4>{side}: <span class='mono'>{_e(head)}</span></h4>"
        f"<p class='mono'>{_e(req.get('method'))} {_e(req.get('url'))}</p>"
        f"<details><summary>body ({_e(info)})</summary>"
        f"<pre class='body'>{_e(text[:EXAMPLE_BODY_CHARS])}"
        f"{'…' if cut else ''}</pre></details>"
        "<details><summary>curl</summary>"
        f"<pre class='curl'>{_e(view['curl'][side])}</pre></details>"
        "</div>"
    )


def _exchange(view: dict[str, Any]) -> str:
    """Raw exchanges and the upstream view, old and new side by side."""
    texts = view.get("exchange") or {}
    if not any(texts.values()):
        return ""
    cells = "".join(f"<div><pre>{_e(texts.get(s, ''))}</pre></div>" for s in ("old", "new"))
    return f"<h4>exchange and forwarded requests</h4><div class='sbs exchange'>{cells}</div>"


def _example(view: dict[str, Any]) -> str:
    return (
        f"<div class='example'><p>example: <code>{_e(view['id'])}</code></p>"
        f"<div class='sbs'>{_side(view, 'old')}{_side(view, 'new')}</div>"
        f"{_exchange(view)}{_header_table(view['headers'])}{_body_diff(view)}</div>"
    )


def _clusters(page: Page) -> str:
    clusters = page.clusters
    if not clusters:
        return "<h2>Difference signatures</h2><p>No differences.</p>"
    parts = [f"<h2>Difference signatures ({len(clusters)})</h2>"]
    for c in clusters:
        example = c.get("view")  # set for the first MAX_EXAMPLES clusters only
        parts.append(
            f"<section class='cluster' id='{_e(c['id'])}'><h3>{_e(c['description'])}</h3>"
            f"<p class='meta'>{_e(c['template'])} · <b>{c['count']}</b> cases "
            f"({c['share']:.2%}) · first <code>{_e(c['first'])}</code> · last "
            f"<code>{_e(c['last'])}</code> · <span class='mono'>{_e(c['id'])}</span> · "
            f"<a href='#cases' data-sig='{_e(c['id'])}'>show its cases</a></p>"
            f"<p>e.g. <span class='mono'>{_e(c.get('example_change', ''))}</span></p>"
        )
        if example is not None:
            parts.append(_example(example))
        elif c.get("missing"):
            parts.append(f"<p class='meta'>{_e(c['missing'])}</p>")
        parts.append("</section>")
    return "".join(parts)


def _errors(page: Page) -> str:
    if not page.errors:
        return ""
    keys = list(dict.fromkeys(k for e in page.errors for k in e if k != "examples"))
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_e(e.get(k))}</td>" for k in keys) + "</tr>" for e in page.errors
    )
    return f"<h2 id='errors'>Error signatures</h2><table><tr>{head}</tr>{rows}</table>"


def _accepted(gate: dict[str, Any]) -> str:
    accepted = gate.get("accepted")
    if not accepted:
        return ""
    rows = []
    for status in ("used", "expired", "stale"):
        for e in accepted.get(status, []):
            rows.append(
                f"<tr><td>{_e(status)}</td><td>{_e(e.get('template'))}</td>"
                f"<td>{_e(e.get('location'))}</td><td>{_e(e.get('reason'))}</td>"
                f"<td>{_e(e.get('expires', 'never'))}</td>"
                f"<td class='num'>{_e(e.get('differences', ''))}"
                f"</td><td>{_e(e.get('source'))}</td></tr>"
            )
    return (
        f"<h2 id='accepted'>Accepted differences ({gate.get('totals', {}).get('accepted', 0)} "
        "cases match only through them)</h2><table><tr><th>status</th><th>template</th>"
        "<th>location</th><th>reason</th><th>expires</th><th>differences</th><th>entry</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _noise(gate: dict[str, Any]) -> str:
    noise = gate.get("noise", [])
    if not noise:
        return ""
    rows = "".join(
        f"<tr><td>{_e(n['template'])}</td><td>{_e(n['kind'])}</td><td class='mono'>"
        f"{_e(n['location'])}</td>"
        f"<td class='num'>{_e(n['differing'])} / {_e(n['samples'])}</td></tr>"
        for n in noise
    )
    return (
        f"<h2 id='noise'>Learned noise</h2><details><summary>{len(noise)} location(s) left out of "
        "the comparison: they differ between two old responses too</summary><table><tr>"
        f"<th>template</th><th>kind</th><th>location</th><th>differed</th></tr>{rows}</table>"
        "</details>"
    )


_COLORS = {"old": "#1f6feb", "new": "#d1242f"}


def latency_svg(gate: dict[str, Any], cdf: dict[str, list[tuple[float, float]]]) -> str:
    """Both targets' latency CDFs (log-scaled ms), p50/p90/p99 of each marked."""
    stats = gate.get("latency", {})
    points = {t: [(p, ms) for p, ms in cdf.get(t, []) if ms > 0] for t in ("old", "new")}
    values = [ms for pts in points.values() for _, ms in pts]
    table = "".join(
        f"<tr><td style='color:{_COLORS.get(t, '#000')}'>{_e(t)}</td>"
        + "".join(
            f"<td class='num'>{value_text(s.get(k))}</td>"
            for k in ("count", "p50", "p90", "p99", "max", "mean")
        )
        + "</tr>"
        for t, s in stats.items()
    )
    out = [
        "<h2 id='latency'>Latency</h2><table><tr><th>target</th><th>count</th><th>p50 ms</th>"
        f"<th>p90 ms</th><th>p99 ms</th><th>max ms</th><th>mean ms</th></tr>{table}</table>"
    ]
    if not values:
        return "".join(out)
    # x: latency, log-scaled; y: percentile on a "nines" scale (-log10 of the share above it),
    # so p90, p99 and p99.9 are evenly apart and the tail is as readable as the median.
    w, h, left, right, bottom, top = 800, 280, 56, 150, 34, 14
    lo, hi = math.log10(min(values)), math.log10(max(values))
    if hi - lo < 0.3:
        lo, hi = lo - 0.15, hi + 0.15
    nines = 4.0  # the top of the scale: p99.99

    def x(ms: float) -> float:
        return left + (math.log10(ms) - lo) / (hi - lo) * (w - left - right)

    def y(p: float) -> float:
        level = min(-math.log10(max(1 - p / 100, 10**-nines)), nines)
        return h - bottom - level / nines * (h - top - bottom)

    svg = [
        f"<svg id='latency-svg' xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' "
        f"viewBox='0 0 {w} {h}' role='img' aria-label='latency CDF of old and new'>",
        f"<line x1='{left}' y1='{y(0)}' x2='{w - right}' y2='{y(0)}' stroke='#999'/>",
        f"<line x1='{left}' y1='{y(0)}' x2='{left}' y2='{top}' stroke='#999'/>",
    ]
    for p in (0, 50, 90, 99, 99.9, 99.99):
        svg.append(
            f"<line x1='{left}' y1='{y(p):.1f}' x2='{w - right}' y2='{y(p):.1f}' stroke='#eee'/>"
            f"<text x='{left - 4}' y='{y(p) + 4:.1f}' text-anchor='end'>p{p:g}</text>"
        )
    decade = math.floor(lo)
    while decade <= hi:
        for m in (1, 2, 5):
            v = m * 10**decade
            if lo <= math.log10(v) <= hi:
                svg.append(
                    f"<line x1='{x(v):.1f}' y1='{y(0)}' x2='{x(v):.1f}' y2='{y(0) + 4}' "
                    "stroke='#999'/>"
                    f"<text x='{x(v):.1f}' y='{h - 16}' text-anchor='middle'>{v:g} ms</text>"
                )
        decade += 1
    svg.append(f"<text x='{left}' y='{h - 2}' fill='#666'>latency (log scale) →</text>")
    for n, target in enumerate(("old", "new")):
        pts = points[target]
        if not pts:
            continue
        color = _COLORS[target]
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{x(ms):.1f},{y(p):.1f}" for i, (p, ms) in enumerate(pts)
        )
        svg.append(f"<path d='{path}' fill='none' stroke='{color}' stroke-width='2'/>")
        for key in ("p50", "p90", "p99"):
            mark = stats.get(target, {}).get(key)
            if isinstance(mark, int | float) and mark > 0:
                pct = float(key[1:])
                svg.append(
                    f"<circle class='mark' cx='{x(mark):.1f}' cy='{y(pct):.1f}' r='4' "
                    f"fill='{color}'><title>{target} {key}: {mark:g} ms</title></circle>"
                    f"<text x='{w - right + 8 + 70 * n}' y='{y(pct) + 4:.1f}' fill='{color}'>"
                    f"{mark:.4g} ms</text>"
                )
        svg.append(
            f"<text x='{w - right + 8 + 70 * n}' y='{top}' fill='{color}' "
            f"font-weight='600'>{target}</text>"
        )
    svg.append("</svg>")
    out.append("".join(svg))
    return "".join(out)


def _cases_section(total: int) -> str:
    return (
        f"<h2 id='cases'>Cases that did not match ({total})</h2>"
        "<div class='bar'><input id='case-filter' type='search' "
        "placeholder='filter: id, suite, outcome, signature, words…' aria-label='filter cases'>"
        "<select id='case-outcome' aria-label='outcome'><option value=''>any outcome</option>"
        "<option>diff</option><option>fail</option><option>error</option><option>match</option>"
        "</select><select id='case-signature' aria-label='signature'>"
        "<option value=''>any signature</option></select>"
        "<label><input id='case-group' type='checkbox' checked> group by signature</label>"
        "<span id='case-count' class='meta'></span></div>"
        "<table id='case-table'><thead><tr><th>case</th><th>suite</th><th>outcome</th>"
        "<th>what</th></tr></thead><tbody id='case-rows'></tbody></table>"
        "<div class='bar pager'><button id='case-prev' type='button'>‹ previous</button>"
        "<span id='case-page'></span><button id='case-next' type='button'>next ›</button></div>"
        "<noscript><p>The case list needs JavaScript; every case is in results.jsonl."
        "</p></noscript>"
    )


def write_page(out: IO[str], page: Page, case_rows: Iterable[str], case_count: int) -> None:
    """Write the page to ``out``. ``case_rows`` are the case list's rows, each already
    `script_json` text (`case_row`), streamed so a 100k-case run is never held as one list."""
    gate = page.gate
    out.write(_head(gate))
    out.write(_verdict(gate))
    out.write(_context(page))
    out.write(_checks(gate))
    out.write(_baseline(gate))
    out.write(_clusters(page))
    out.write(_cases_section(case_count))
    out.write(_errors(page))
    out.write(_accepted(gate))
    out.write(latency_svg(gate, page.latency_cdf))
    out.write(_noise(gate))
    sigs = [
        {"id": c["id"], "count": c["count"], "text": f"{c['template']}: {c['description']}"}
        for c in page.clusters
    ]
    out.write(f"<script type='application/json' id='signatures-data'>{script_json(sigs)}</script>")
    out.write("<script type='application/json' id='cases-data'>[")
    for index, row in enumerate(case_rows):
        if index:
            out.write(",")
        out.write(row)
    out.write("]</script>")
    out.write(f"<script>{_JS}</script></body></html>\n")


_OUTCOME_INDEX = {"match": 0, "diff": 1, "fail": 2, "error": 3}


def case_row(row: dict[str, Any], lines: list[str]) -> str:
    """One case of the page's list (from a redacted results row): id, suite, outcome, signature
    ids, what differed (one line each, cut), request line."""
    what = "\n".join(lines)
    if len(what) > CASE_SUMMARY_CHARS:
        what = what[: CASE_SUMMARY_CHARS - 1] + "…"
    return script_json(
        [
            row["id"],
            row["suite"],
            _OUTCOME_INDEX.get(row["outcome"], 1),
            row.get("signatures", []),
            what,
            f"{row.get('method', '')} {row.get('path', '')}",
        ]
    )
