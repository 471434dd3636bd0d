"""Write services/<svc>/Dockerfile for every service from Dockerfile.template.

uv run python deploy/docker/render_dockerfiles.py          # write
uv run python deploy/docker/render_dockerfiles.py --check  # exit 1 if a Dockerfile drifted
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = Path(__file__).with_name("Dockerfile.template")
SERVICES = ("notifier", "inquiry", "orders", "aftersales", "feedback")


def render(service: str) -> str:
    text = TEMPLATE.read_text(encoding="utf-8")
    return text.replace("@SVCU@", service.upper()).replace("@SVC@", service)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    drifted = []
    for service in SERVICES:
        target = ROOT / "services" / service / "Dockerfile"
        if not target.parent.is_dir():
            continue
        text = render(service)
        if check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                drifted.append(str(target.relative_to(ROOT)))
        else:
            target.write_text(text, encoding="utf-8")
    for path in drifted:
        print(f"{path} differs from deploy/docker/Dockerfile.template", file=sys.stderr)
    return 1 if drifted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
