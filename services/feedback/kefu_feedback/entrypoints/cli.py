"""``kefu-feedback-report``: write the supervisor's report of a period (Markdown or HTML).

It asks a running feedback service for the period's KPIs (``GET /kpis``) and renders them with
their charts, so the figures are exactly those of the API and the dashboards::

    kefu-feedback-report --from 2026-03-02 --to 2026-03-09 --out weekly.md
    kefu-feedback-report --from 2026-03-02 --to 2026-03-09 --format html --out weekly.html

Markdown writes its PNG charts into ``<out stem>_charts/`` beside the file; HTML embeds them as
SVG. ``--url`` (or ``KEFU_FEEDBACK_URL``) points at the service; ``--token`` (or
``KEFU_FEEDBACK_TOKEN``) is sent as a bearer token where the service requires one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kefu_feedback.adapters.report import render_html, render_markdown

FetchKpis = Callable[[dict[str, str]], dict[str, Any]]


def write_report(doc: dict[str, Any], out: Path, fmt: str) -> list[Path]:
    """Write the report (and, for Markdown, its charts); returns the files written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "html":
        out.write_text(render_html(doc), encoding="utf-8")
        return [out]
    charts_dir = out.parent / f"{out.stem}_charts"
    text, images = render_markdown(doc, charts_dir.name)
    charts_dir.mkdir(exist_ok=True)
    written = [out]
    for name, data in images.items():
        (charts_dir / name).write_bytes(data)
        written.append(charts_dir / name)
    out.write_text(text, encoding="utf-8")
    return written


def http_fetch(url: str, token: str | None, timeout: float = 60.0) -> FetchKpis:
    # The standard library is enough for one GET: the command needs no HTTP client package.
    def fetch(params: dict[str, str]) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            f"{url.rstrip('/')}/kpis?{urllib.parse.urlencode(params)}", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"the service answered {exc.code}: {exc.read().decode()}") from exc
        return data

    return fetch


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kefu-feedback-report", description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="start", required=True, help="ISO date (shop time).")
    p.add_argument("--to", dest="end", required=True, help="Exclusive end, ISO date.")
    p.add_argument("--channel")
    p.add_argument("--category")
    p.add_argument("--agent-id")
    p.add_argument("--format", choices=("markdown", "html"), default="markdown")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--url", default=os.environ.get("KEFU_FEEDBACK_URL", "http://127.0.0.1:8086"))
    p.add_argument("--token", default=os.environ.get("KEFU_FEEDBACK_TOKEN"))
    return p


def main(argv: Sequence[str] | None = None, *, fetch: FetchKpis | None = None) -> int:
    args = parser().parse_args(argv)
    params = {"from": args.start, "to": args.end}
    for name in ("channel", "category", "agent_id"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    doc = (fetch or http_fetch(args.url, args.token))(params)
    for path in write_report(doc, args.out, args.format):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
