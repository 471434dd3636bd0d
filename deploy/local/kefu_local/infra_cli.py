"""`infra up|down|status|logs`: the local Kafka + FerretDB from the command line.

`add_infra_commands` plugs these into a bigger CLI (the `kefu` command); every subcommand sets
`args.func(args) -> int`, so the host CLI only has to call it. Until then:
`python -m kefu_local.infra_cli infra up`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from kefu_local.infra import Endpoints, InfraError, LocalInfra
from kefu_local.process import tail


def _infra(args: argparse.Namespace) -> LocalInfra:
    return LocalInfra(
        profile=args.profile,
        kafka_port=getattr(args, "kafka_port", None),
        controller_port=getattr(args, "controller_port", None),
        mongo_port=getattr(args, "mongo_port", None),
    )


def _print_endpoints(endpoints: Endpoints, infra: LocalInfra) -> None:
    for key, value in endpoints.as_env().items():
        print(f"{key}={value}")
    print(f"# logs: {infra.logs_dir}")
    print(f"# load into a shell: set -a; . {infra.state_dir / 'endpoints.env'}; set +a")


def _cmd_up(args: argparse.Namespace) -> int:
    infra = _infra(args)
    started = time.monotonic()
    try:
        endpoints = infra.up(timeout=args.timeout)
    except InfraError as exc:
        print(f"infra up failed: {exc}", file=sys.stderr)
        return 1
    print(f"# ready in {time.monotonic() - started:.1f} s (profile {args.profile})")
    _print_endpoints(endpoints, infra)
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    infra = _infra(args)
    infra.down()
    print(f"# stopped profile {args.profile}; data and logs kept in {infra.state_dir}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    infra = _infra(args)
    status = infra.status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"profile {status['profile']}: state in {status['state_dir']}")
    for name, address in (("kafka", "bootstrap"), ("mongodb", "uri")):
        part = status[name]
        state = f"running (pid {part['pid']})" if part["running"] else "stopped"
        answering = "port open" if part["port_open"] else "port closed"
        print(f"  {name:8} {state:22} {answering:12} {part[address]}  log: {part['log']}")
    if status["kafka"]["running"] and status["mongodb"]["running"]:
        _print_endpoints(infra.endpoints, infra)
    # Exit code 3 like `systemctl status`: scripts can test "is it up?" without parsing.
    return 0 if status["kafka"]["running"] and status["mongodb"]["running"] else 3


def _cmd_logs(args: argparse.Namespace) -> int:
    infra = _infra(args)
    files = {
        "kafka": [infra.kafka.log_file, infra.kafka.console_file],
        "mongodb": [infra.ferretdb.log_file],
    }
    names = [args.component] if args.component else ["kafka", "mongodb"]
    print(f"# logs in {infra.logs_dir}")
    for name in names:
        for path in files[name]:
            print(f"--- {path}")
            if args.lines > 0:
                print(tail(path, args.lines))
    return 0


def add_infra_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `infra up|down|status|logs` to a CLI's subparsers."""
    infra = sub.add_parser("infra", help="run a local Kafka broker and FerretDB (no Docker)")
    commands = infra.add_subparsers(dest="infra_command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument(
            "--profile",
            default="dev",
            help="separate servers, ports and data per profile (default: dev)",
        )
        return parser

    up = command("up", "start Kafka and FerretDB (download/build on first run) and wait")
    up.add_argument("--kafka-port", type=int, help="default 19092 (or the profile's last)")
    up.add_argument("--controller-port", type=int, help="default 19093 (or the profile's last)")
    up.add_argument("--mongo-port", type=int, help="default 27027 (or the profile's last)")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    up.set_defaults(func=_cmd_up)

    command("down", "stop them (data and logs are kept)").set_defaults(func=_cmd_down)

    status = command("status", "show pids, ports and log files; exit 3 if not running")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_cmd_status)

    logs = command("logs", "show where the logs are and their last lines")
    logs.add_argument("component", nargs="?", choices=["kafka", "mongodb"])
    logs.add_argument("-n", "--lines", type=int, default=40, help="lines per file (0: paths only)")
    logs.set_defaults(func=_cmd_logs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kefu_local.infra_cli")
    add_infra_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
