"""The terminal table: absolute figures (noisy on a shared 2-core machine) with the ratios that
are meant to be compared, and the issue's targets."""

from __future__ import annotations

import math
import time
from typing import Any

TARGETS = {
    "same_io": 0.5,
    "faststream": 10.0,
    "p99_at_50_ms": 100.0,
    "rss_mib": 150.0,
    "scaling": 1.7,
}


class Progress:
    """One line per step on stderr-like stdout, with the time since the run started."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def __call__(self, what: str) -> None:
        print(f"[{time.monotonic() - self._t0:6.1f}s] {what}", flush=True)


def _ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _fmt_ratio(r: float | None) -> str:
    if r is None:
        return "n/a"
    if r >= 10:
        return f"{r:.0f}x"
    if r >= 0.1:
        return f"{r:.2f}x"
    return f"{r:.4f}x"


def _fmt_rate(v: float | None) -> str:
    if v is None:
        return "n/a"
    if v < 1:
        return f"{v:.2f}"
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def _ms(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.0f}" if v >= 10 else f"{v:.1f}"


def _ok(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


def _row(add: Any) -> Any:
    def row(label: str, value: float | None, unit: str) -> None:
        add(f"  {label:<54}{_fmt_rate(value):>10}  {unit}")

    return row


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Every ratio the table prints, also stored in the JSON."""
    base = results.get("baselines", {})
    phases = results.get("kefu", {})
    e2e = phases.get("max", {}).get("e2e_per_s")
    out: dict[str, Any] = {
        "e2e_vs_raw_same_io": _ratio(e2e, base.get("raw_same_io", {}).get("per_s")),
        "e2e_vs_raw_kafka": _ratio(e2e, base.get("raw_kafka", {}).get("produce_consume_per_s")),
        "e2e_vs_raw_insert_many": _ratio(
            e2e, base.get("raw_mongo", {}).get("insert_many_docs_per_s")
        ),
        "e2e_vs_faststream": _ratio(e2e, base.get("faststream", {}).get("per_s")),
    }
    two = phases.get("max_2_instances", {})
    one = phases.get("max", {})
    out["scaling_e2e"] = _ratio(two.get("e2e_per_s"), one.get("e2e_per_s"))
    out["scaling_inquiry_stage"] = _ratio(two.get("inquiry_per_s"), one.get("inquiry_per_s"))
    growth = results.get("growth", [])
    out["growth"] = [
        {
            "stored_inquiries": g["stored_inquiries"],
            "throughput_vs_small": _ratio(g.get("max", {}).get("e2e_per_s"), e2e),
            "p99_vs_small": _ratio(
                g.get("at_50pct", {}).get("latency_ms", {}).get("p99"),
                phases.get("at_50pct", {}).get("latency_ms", {}).get("p99"),
            ),
        }
        for g in growth
    ]
    return out


def table(results: dict[str, Any]) -> str:
    r = ratios(results)
    results["ratios"] = r
    base = results.get("baselines", {})
    phases = results.get("kefu", {})
    lines: list[str] = []
    add = lines.append
    machine = results.get("machine", {})
    add("")
    add(
        f"kefu benchmark ({results['mode']}), {results['started_at'][:19]} UTC, "
        f"{machine.get('cores')} cores, store {machine.get('store_kind')}, "
        f"{results.get('duration_s', 0):.0f}s"
    )
    load = (
        results.get("load_average_at_start", [0, 0, 0])[0],
        results.get("load_average_at_end", [0, 0, 0])[0],
    )
    add(
        "Absolute figures are noisy here (2 shared cores; load average"
        f" {load[0]:.1f} at the start, {load[1]:.1f} at the end); compare the ratios."
    )
    add("")
    add("BASELINES (same broker, same store, same payloads)")
    rk, rm = base.get("raw_kafka", {}), base.get("raw_mongo", {})
    fs, io = base.get("faststream", {}), base.get("raw_same_io", {})
    row = _row(add)
    row(
        "raw aiokafka produce+consume (inbound envelopes)", rk.get("produce_consume_per_s"), "msg/s"
    )
    row("raw PyMongo insert_many (inquiry documents)", rm.get("insert_many_docs_per_s"), "docs/s")
    single = rm.get("single_op_ms", {})
    if single:
        add(
            "    one document, one in flight: "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in single.items())
        )
    row("raw same-I/O pipeline (aiokafka + PyMongo, batched)", io.get("per_s"), "msg/s")
    row("FastStream published method, 1 in flight", fs.get("per_s"), "msg/s")
    add("")
    add("KEFU INTAKE END TO END (chat message -> bot answer -> notification.sent)")
    mx = phases.get("max", {})
    row("max sustained, 1 inquiry + 1 notifier", mx.get("e2e_per_s"), "msg/s")
    add(
        f"    inquiry stage alone {_fmt_rate(mx.get('inquiry_per_s'))} msg/s;"
        f" {mx.get('completed', 0)}/{mx.get('sent', 0)} journeys completed"
    )
    add(
        f"    ratio vs raw same-I/O {_fmt_ratio(r['e2e_vs_raw_same_io'])}"
        f" | vs raw kafka {_fmt_ratio(r['e2e_vs_raw_kafka'])}"
        f" | vs raw insert_many {_fmt_ratio(r['e2e_vs_raw_insert_many'])}"
        f" | vs FastStream 1-in-flight {_fmt_ratio(r['e2e_vs_faststream'])}"
    )
    cmds = mx.get("store_commands_per_message")
    if cmds:
        add("    store commands per message: " + ", ".join(f"{k} {v}" for k, v in cmds.items()))
    cpu = mx.get("cpu")
    if cpu:
        add("    CPU (cores) during max: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    add("")
    add(
        "  load          offered msg/s  done/sent    p50 ms    p95 ms    p99 ms"
        "   (inquiry stage p50/p99 ms)"
    )
    for share in (25, 50, 90):
        p = phases.get(f"at_{share}pct")
        if not p:
            add(f"  {share}% of max      skipped")
            continue
        lat, inq = p["latency_ms"], p["inquiry_latency_ms"]
        add(
            f"  {share:>2}% of max    {p['offered_per_s']:>10.1f}"
            f"   {p['completed']:>4}/{p['sent']:<4}"
            f" {_ms(lat['p50']):>8}  {_ms(lat['p95']):>8}  {_ms(lat['p99']):>8}"
            f"   ({_ms(inq['p50'])}/{_ms(inq['p99'])}){'  ' + p['note'] if p.get('note') else ''}"
        )
    add("")
    two = phases.get("max_2_instances")
    add("SCALING (inbound topic partitions: 4)")
    if two:
        add(
            f"  2 inquiry instances: {_fmt_rate(two.get('e2e_per_s'))} msg/s end to end"
            f" ({_fmt_ratio(r['scaling_e2e'])} of 1 instance), inquiry stage"
            f" {_fmt_rate(two.get('inquiry_per_s'))} msg/s"
            f" ({_fmt_ratio(r['scaling_inquiry_stage'])})"
        )
        if two.get("cpu"):
            add("    CPU (cores): " + ", ".join(f"{k} {v:.2f}" for k, v in two["cpu"].items()))
    else:
        add("  skipped")
    add("")
    add("MEMORY (peak RSS per service process over the run)")
    mem = results.get("memory_kib", {})
    for name, m in mem.items():
        hwm = m.get("VmHWM", 0) / 1024
        add(f"  {name:<12} {hwm:7.1f} MiB peak   {m.get('VmRSS', 0) / 1024:7.1f} MiB at the end")
    add("")
    add("GROWTH (stored inquiries preloaded with the service's document shape)")
    add(f"  {'stored':>8}  {'max msg/s':>10}  {'vs small':>9}  {'p99 @50% ms':>12}  {'n':>4}  note")
    small_p99 = phases.get("at_50pct", {}).get("latency_ms", {}).get("p99")
    add(
        f"  {mx.get('stored_inquiries', 0):>8}  {_fmt_rate(mx.get('e2e_per_s')):>10}  {'1x':>9}"
        f"  {_ms(small_p99):>12}  {phases.get('at_50pct', {}).get('completed', 0):>4}"
        "  (the phases above)"
    )
    for g, gr in zip(results.get("growth", []), r["growth"], strict=False):
        steady = g.get("at_50pct", {})
        mg = g.get("max", {})
        note = " ".join(x for x in (g.get("note", ""), mg.get("note", "")) if x)
        add(
            f"  {g['stored_inquiries']:>8}  {_fmt_rate(mg.get('e2e_per_s')) if mg else '-':>10}"
            f"  {_fmt_ratio(gr['throughput_vs_small']):>9}"
            f"  {_ms(steady.get('latency_ms', {}).get('p99')):>12}  {steady.get('completed', 0):>4}"
            f"  {note}".rstrip()
        )
    probes = [
        (g["stored_inquiries"], g.get("store_probe_ms", {})) for g in results.get("growth", [])
    ]
    if probes and probes[0][1]:
        add("  one store command alone, ms (inquiry service paused), by stored inquiries:")
        for name in probes[0][1]:
            cells = "".join(
                f"{p[name]:>9.0f}" if p.get(name) is not None else f"{'-':>9}" for _, p in probes
            )
            add(f"    {name:<52}{cells}")
        add(f"    {'(stored inquiries)':<52}" + "".join(f"{n:>9}" for n, _ in probes))
    add("")
    add("TARGETS")
    p50 = phases.get("at_50pct", {}).get("latency_ms", {}).get("p99")
    rss = [m.get("VmHWM", 0) / 1024 for m in mem.values()]
    checks = [
        ("end to end >= 0.5x raw same-I/O", r["e2e_vs_raw_same_io"], TARGETS["same_io"], True),
        ("end to end >= 10x FastStream 1-in-flight", r["e2e_vs_faststream"], 10.0, True),
        ("p99 < 100 ms at 50% of max", p50, TARGETS["p99_at_50_ms"], False),
        ("peak RSS < 150 MiB per service", max(rss) if rss else None, TARGETS["rss_mib"], False),
        ("2 instances >= 1.7x one", r["scaling_e2e"], TARGETS["scaling"], True),
    ]
    verdicts = {}
    for label, value, target, higher in checks:
        passed = None if value is None else (value >= target if higher else value < target)
        verdicts[label] = {"value": value, "target": target, "passed": passed}
        shown = _fmt_ratio(value) if higher else (f"{value:.0f}" if value is not None else "n/a")
        add(f"  {_ok(passed):<5} {label:<44} {shown}")
    results["targets"] = verdicts
    for note in results.get("notes", []):
        add(f"  note: {note}")
    prof = results.get("profile")
    if prof:
        add("")
        add("PROFILE (py-spy, CPU samples during the max phase)")
        for name, p in prof.items():
            add(f"  {name}: {p['samples']} samples")
            add("    on CPU in: " + ", ".join(f"{k} {v:.0%}" for k, v in p["by_package"][:6]))
            add("    under: " + ", ".join(f"{k} {v:.0%}" for k, v in p["under_kefu_function"][:5]))
    return "\n".join(lines)
