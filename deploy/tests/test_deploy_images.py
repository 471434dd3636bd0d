"""The service images, checked without a Docker engine: each Dockerfile is linted (hadolint),
its base images are pinned, its final stage runs as a non-root user with a health check and no
build tools, every file it copies exists, and its builder stage, replayed here with the same uv
commands on the files it copies, yields a virtual environment holding that service and its own
dependencies only."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from deploy_model import ROOT, SERVICES, parse_dockerfile

from conftest import require_tool

DOCKERFILE_TEMPLATE = ROOT / "deploy" / "docker" / "Dockerfile.template"
BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|apk|yum|dnf|gcc|g\+\+|make|build-essential|uv|pip install|git|curl|wget)\b"
)


def dockerfile(service: str) -> Path:
    return ROOT / "services" / service / "Dockerfile"


@pytest.fixture(params=SERVICES)
def service(request: pytest.FixtureRequest) -> str:
    service = str(request.param)
    if not (ROOT / "services" / service / "pyproject.toml").exists():
        pytest.skip(f"services/{service} does not exist yet")
    return service


def test_every_service_has_a_dockerfile(service: str) -> None:
    assert dockerfile(service).is_file(), f"services/{service}/Dockerfile is missing"


def test_dockerfiles_follow_the_template() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "docker" / "render_dockerfiles.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, (
        f"{result.stderr}Edit deploy/docker/Dockerfile.template and run "
        "`uv run python deploy/docker/render_dockerfiles.py`, or drop this check for a service "
        "that really needs its own."
    )


def test_hadolint_finds_nothing(service: str) -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(dockerfile(service))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_images_are_pinned(service: str) -> None:
    _, stages = parse_dockerfile(dockerfile(service).read_text())
    for stage in stages:
        image = stage.image
        if image in {s.name for s in stages}:
            continue
        assert "$" not in image, f"{image}: unresolved build argument"
        name, _, tag = image.rpartition(":")
        assert name, f"{image}: no image name"
        assert tag not in ("", "latest"), f"{image}: pin a version tag"
        assert re.match(r"\d+\.\d+(\.\d+)?", tag), f"{image}: the tag should name a version"


def test_final_stage_is_non_root_with_healthcheck_and_no_build_tools(service: str) -> None:
    _, stages = parse_dockerfile(dockerfile(service).read_text())
    final = stages[-1]
    keywords = [i.keyword for i in final.instructions]
    users = [i.args for i in final.instructions if i.keyword == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, "the final stage runs as root"
    assert user.isdigit(), "a numeric USER lets Kubernetes verify runAsNonRoot"
    assert "HEALTHCHECK" in keywords
    health = next(i for i in final.instructions if i.keyword == "HEALTHCHECK").args
    assert "/healthz" in health
    entry = next(i for i in final.instructions if i.keyword == "ENTRYPOINT").args
    assert f"kefu_{service}" in entry
    for instruction in final.instructions:
        if instruction.keyword == "RUN":
            # The one RUN of the final stage removes pip and adds the user: nothing installed.
            assert not BUILD_TOOLS.search(instruction.args.replace("pip uninstall", "")), (
                f"build tooling in the final stage: {instruction.args}"
            )
        if instruction.keyword == "COPY":
            assert instruction.flags.get("from"), (
                "the final stage copies only from the builder (the virtual environment)"
            )
    env = " ".join(i.args for i in final.instructions if i.keyword == "ENV")
    assert f"KEFU_{service.upper()}_HTTP_HOST=0.0.0.0" in env


def test_every_copy_source_exists(service: str) -> None:
    _, stages = parse_dockerfile(dockerfile(service).read_text())
    for stage in stages:
        for instruction in stage.instructions:
            if instruction.keyword != "COPY" or "from" in instruction.flags:
                continue
            words = instruction.args.split()
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"


def test_builder_installs_this_services_own_dependency_list(service: str) -> None:
    _, stages = parse_dockerfile(dockerfile(service).read_text())
    runs = " ".join(i.args for i in stages[1].instructions if i.keyword == "RUN")
    assert f"--package kefu-{service}" in runs
    env = " ".join(i.args for i in stages[1].instructions if i.keyword == "ENV")
    for setting in ("UV_FROZEN=1", "UV_NO_DEV=1"):
        assert setting in env, (
            f"the builder must install from uv.lock without dev tools ({setting})"
        )


def _replay_builder(service: str, workdir: Path) -> Path:
    """Run the builder stage's COPY and RUN steps here, with the same uv commands."""
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in $UV
    if uv is None:
        pytest.skip("uv is not on PATH")
    _, stages = parse_dockerfile(dockerfile(service).read_text())
    builder = next(s for s in stages if s.name == "builder")
    venv = workdir / "venv"
    src = workdir / "src"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    cwd = workdir
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache")
    for instruction in builder.instructions:
        if instruction.keyword == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", instruction.args):
                env[key] = value
        elif instruction.keyword == "WORKDIR":
            cwd = src
            cwd.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY" and "from" not in instruction.flags:
            *sources, dest = instruction.args.split()
            for source in sources:
                origin = ROOT / source
                target = cwd / dest
                if origin.is_dir():
                    shutil.copytree(origin, target, dirs_exist_ok=True, ignore=ignore)
                else:
                    if dest.endswith("/") or dest == "./":
                        target.mkdir(parents=True, exist_ok=True)
                        target = target / origin.name
                    shutil.copy2(origin, target)
        elif instruction.keyword == "RUN":
            env.update(
                UV_PROJECT_ENVIRONMENT=str(venv),
                UV_PYTHON=getattr(sys, "_base_executable", sys.executable),
                UV_COMPILE_BYTECODE="0",  # what it compiles is not under test; it takes long
                UV_LINK_MODE="hardlink",  # the image copies; here linking from the cache is faster
            )
            command = instruction.args.replace("/opt/kefu/venv", str(venv))
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command.replace("uv ", f"{uv} ", 1)],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert result.returncode == 0, textwrap.shorten(
                f"builder step failed: {command}\n{result.stderr}", 4000
            )
    return venv


_import_errors: dict[str, str] = {}


def _import_entry_point(service: str, venv: Path) -> str:
    """Import the service's entry point with the venv's interpreter alone: proves its dependency
    list is complete. Returns the error, or "" when the import works."""
    main = ROOT / "services" / service / f"kefu_{service}" / "__main__.py"
    module = f"kefu_{service}.__main__" if main.exists() else f"kefu_{service}"
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"import {module}"],
        cwd=venv.parent,
        env={"PATH": os.environ["PATH"], "PYTHONNOUSERSITE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return (
        ""
        if result.returncode == 0
        else f"import {module} fails in the image's venv:\n{result.stderr}"
    )


@pytest.fixture(scope="module")
def builder_venvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | BaseException]:
    """Every service's builder stage replayed once, side by side (each takes seconds)."""
    present = [s for s in SERVICES if (ROOT / "services" / s / "Dockerfile").exists()]

    def replay(service: str) -> Path | BaseException:
        try:
            venv = _replay_builder(service, tmp_path_factory.mktemp(f"image-{service}"))
        except BaseException as exc:  # reported by the test of that service
            return exc
        _import_errors[service] = _import_entry_point(service, venv)
        return venv

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(present, pool.map(replay, present), strict=True))


# The first call replays every builder (uv installs, then an import that compiles every module):
# about half a minute on an idle machine, much longer on a busy one.
@pytest.mark.timeout(1200)
def test_builder_stage_yields_a_venv_with_this_service_only(
    service: str, builder_venvs: dict[str, Path | BaseException]
) -> None:
    venv, venv_import_errors = builder_venvs[service], _import_errors
    if isinstance(venv, BaseException):
        raise venv
    site = next((venv / "lib").glob("python3.*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert f"kefu_{service}" in installed
    assert "kefu_shared" in installed
    others = {f"kefu_{s}" for s in SERVICES if s != service} | {"kefu_local"}
    assert not installed & others, f"other kefu packages in the image: {installed & others}"
    dev_tools = {"pytest", "mypy", "ruff", "import_linter", "hatchling", "pip"}
    assert not installed & dev_tools, f"development tools in the image: {installed & dev_tools}"
    # Installed as wheels, not linked to the source tree: the final stage copies the venv only.
    assert (site / f"kefu_{service}").is_dir()
    assert venv_import_errors[service] == "", venv_import_errors[service]
