"""The ``kefu`` command: run the whole system locally, run the tests, manage the infrastructure.

``./kefu`` (the script at the repository root) installs the workspace and then calls this.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from kefu_local.infra_cli import add_infra_commands
from kefu_local.paths import REPO_ROOT


def _run(cmd: list[str]) -> int:
    print(f"$ {' '.join(cmd)}", flush=True)
    return subprocess.call(cmd, cwd=REPO_ROOT)


def cmd_test(args: argparse.Namespace) -> int:
    """Static checks, then the whole pytest suite on a real Kafka and FerretDB."""
    checks: list[list[str]] = [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", *_mypy_packages()],
        ["lint-imports"],
    ]
    failed = []
    if not args.no_lint:
        for check in checks:
            if _run(check) != 0:
                failed.append(check[0])
    code = _run(["pytest", *args.pytest_args])
    if failed:
        print(f"static checks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return code


def _mypy_packages() -> list[str]:
    import importlib.util

    packages = ["kefu_shared", "kefu_local"]
    for svc in ("notifier", "inquiry", "orders", "aftersales", "feedback"):
        if importlib.util.find_spec(f"kefu_{svc}") is not None:
            packages.append(f"kefu_{svc}")
    if (REPO_ROOT / "bench" / "__init__.py").is_file():
        packages.append("bench")  # not run by the tests, so typed to keep it from rotting
    return [arg for p in packages for arg in ("-p", p)]


def cmd_run(args: argparse.Namespace) -> int:
    from kefu_local.demo import run_demo

    return run_demo(
        profile=args.profile,
        size=args.size,
        seed=args.seed,
        keep_running=args.keep_running,
        check=args.check,
        port_offset=args.port_offset,
        reports_dir=args.reports,
    )


def cmd_contracts_export(args: argparse.Namespace) -> int:
    """Write the JSON Schemas, the event catalogue page and the AsyncAPI documents."""
    from kefu_local.specs import export_all

    written = export_all(REPO_ROOT / "docs")
    print(f"wrote {len(written)} files under docs/ (events.md, events/schemas, asyncapi)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kefu", description="kefu: a Kafka-native customer-service backend"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="start Kafka, FerretDB and every service, then play a demo shop day"
    )
    run.add_argument("--profile", default="dev", help="infrastructure profile (default: dev)")
    run.add_argument("--size", type=int, default=200, help="customer messages in the demo")
    run.add_argument("--seed", type=int, default=7, help="random seed: same seed, same day")
    run.add_argument(
        "--keep-running", action="store_true", help="leave everything up after the demo"
    )
    run.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless every service handled traffic and every KPI has a value",
    )
    run.add_argument(
        "--port-offset", type=int, default=0, help="added to the services' ports (8101-8106)"
    )
    run.add_argument(
        "--reports", type=Path, default=None, help="where the report goes (default: reports/)"
    )
    run.set_defaults(func=cmd_run)

    test = sub.add_parser("test", help="ruff, mypy, import contracts, then pytest on real servers")
    test.add_argument("--no-lint", action="store_true", help="skip the static checks")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed on to pytest")
    test.set_defaults(func=cmd_test)

    contracts = sub.add_parser("contracts", help="published event contracts")
    contracts_sub = contracts.add_subparsers(dest="contracts_command", required=True)
    export = contracts_sub.add_parser(
        "export", help="write JSON Schemas, docs/events.md and AsyncAPI documents under docs/"
    )
    export.set_defaults(func=cmd_contracts_export)

    add_infra_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    args, extra = build_parser().parse_known_args(argv)
    if extra and args.command != "test":
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:  # `kefu test -x -k outbox`: pytest's own options pass through
        args.pytest_args = [*extra, *args.pytest_args]
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
