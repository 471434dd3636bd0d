"""py-spy on the service processes during a load phase, and a summary of where their CPU went.

py-spy samples another process from outside (no code change, ``--nonblocking`` so the service is
not paused); the raw "collapsed stacks" it writes are summarised here by package (the frame that
was on the CPU) and by the kefu function that caused it (the innermost ``kefu_*`` frame).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

BUCKETS = (
    ("kefu (own code)", ("kefu_shared", "kefu_inquiry", "kefu_notifier")),
    ("pymongo / bson", ("pymongo", "bson")),
    ("pydantic", ("pydantic", "pydantic_core")),
    # py-spy names opentelemetry's namespace packages by their own first component.
    (
        "opentelemetry",
        ("opentelemetry", "trace", "util", "attributes", "context", "sdk", "_semconv"),
    ),
    ("faststream / fast_depends", ("faststream", "fast_depends")),
    ("aiokafka", ("aiokafka", "kafka")),
    ("prometheus_client", ("prometheus_client",)),
    ("logging / json", ("logging", "json")),
    ("jinja2", ("jinja2",)),
    ("event loop (asyncio, selectors: waiting)", ("asyncio", "selectors", "socket", "ssl")),
)
KEFU = ("kefu_shared", "kefu_inquiry", "kefu_notifier")


def py_spy() -> str | None:
    """py-spy from the venv, else PATH, else ``$BENCH_TOOLS/bin`` (a ``--target`` install)."""
    here = Path(sys.executable).parent / "py-spy"
    if here.exists():
        return str(here)
    found = shutil.which("py-spy")
    if found:
        return found
    tools = os.environ.get("BENCH_TOOLS")
    if tools and (Path(tools) / "bin" / "py-spy").exists():
        return str(Path(tools) / "bin" / "py-spy")
    return None


async def record(pids: dict[str, int], seconds: float, out_dir: Path) -> dict[str, Path]:
    """Sample each process for ``seconds`` (100 Hz); returns the raw files written."""
    exe = py_spy()
    if exe is None:
        return {}
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    procs = {}
    for name, pid in pids.items():
        target = out_dir / f"{name}.collapsed.txt"
        procs[name] = (
            target,
            await asyncio.create_subprocess_exec(
                exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(int(seconds), 1)),
                "--rate",
                "100",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(target),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            ),
        )
    written = {}
    for name, (target, proc) in procs.items():
        await proc.wait()
        if target.exists():
            written[name] = target
    return written


def _parse(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if not match:
        return frame, ""
    return match["func"], match["file"] or ""


def _package(path: str) -> str:
    """py-spy writes paths relative to their sys.path entry: the first part is the package."""
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    first = path.strip("/").split("/", 1)[0]
    return first.removesuffix(".py")


def _bucket(package: str) -> str:
    for label, names in BUCKETS:
        if package in names or any(package.startswith(n + ".") for n in names):
            return label
    return "other (stdlib, uvicorn, ...)"


def summarise(path: Path, top: int = 12) -> dict[str, Any]:
    """Share of samples per package bucket (the frame on CPU), and per kefu function (the
    innermost kefu frame of the stack, i.e. which of our calls the time was spent under)."""
    by_bucket: Counter[str] = Counter()
    by_kefu: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_parse(f) for f in stack.split(";")]
        total += count
        leaf_func, leaf_file = frames[-1]
        by_bucket[_bucket(_package(leaf_file))] += count
        by_leaf[f"{leaf_func} ({_package(leaf_file)})"] += count
        owner = "(no kefu frame: event loop, consumer, HTTP)"
        for func, file in reversed(frames):
            if _package(file) in KEFU and func not in ("serve", "main", "<module>"):
                owner = f"{_package(file)}.{func}"
                break
        by_kefu[owner] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(v / total, 3)) for k, v in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "by_package": shares(by_bucket),
        "under_kefu_function": shares(by_kefu),
        "hottest_frames": shares(by_leaf),
    }
