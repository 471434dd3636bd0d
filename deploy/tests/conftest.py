"""Fixtures for the deployment checks: the tools (kustomize, deploycheck, hadolint, promtool,
shellcheck), the rendered Kustomize overlays and the resolved Compose project.

Nothing here needs a Docker engine or a cluster. kustomize is installed once from the Go module
proxy into the kefu cache (``KEFU_CACHE_DIR``, default ``~/.cache/kefu``), and ``deploycheck/``
(compose-go, the loader of ``docker compose``, and a YAML reader) is built there once; a check
whose tool genuinely cannot be had is skipped with the reason.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from deploy_model import (
    COMPONENTS,
    DEPLOY,
    OVERLAYS,
)

KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
# v5.8.3 needs Go 1.27; the machines have Go 1.26.
KUSTOMIZE_VERSION = "v5.8.2"


def cache_dir() -> Path:
    root = Path(os.environ.get("KEFU_CACHE_DIR") or Path.home() / ".cache" / "kefu")
    path = root / "bin"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(name: str) -> Iterator[None]:
    with open(cache_dir() / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _go() -> str | None:
    return shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )


def _go_env(gobin: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-mod=mod")
    env["CGO_ENABLED"] = "0"
    if gobin is not None:
        env["GOBIN"] = str(gobin)
    return env


@pytest.fixture(scope="session")
def kustomize() -> Path:
    """The kustomize binary: from the kefu cache, installed there from the Go proxy if missing."""
    target = cache_dir() / "kustomize"
    with _locked("kustomize"):
        if target.exists():
            return target
        on_path = shutil.which("kustomize")
        if on_path:
            return Path(on_path)
        go = _go()
        if go is None:
            pytest.skip("kustomize is not installed and there is no Go toolchain to install it")
        result = subprocess.run(
            [go, "install", f"{KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}"],
            env=_go_env(cache_dir()),
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        assert result.returncode == 0, f"go install kustomize failed:\n{result.stderr}"
        return target


@pytest.fixture(scope="session")
def deploycheck() -> Path:
    """deploycheck/: compose-go (the loader `docker compose` uses) and a YAML-to-JSON reader."""
    source = Path(__file__).parent / "deploycheck"
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((source / name).read_bytes())
    target = cache_dir() / f"deploycheck-{digest.hexdigest()[:12]}"
    with _locked("deploycheck"):
        if target.exists():
            return target
        go = _go()
        if go is None:
            pytest.skip("no Go toolchain to build the compose-go loader")
        result = subprocess.run(
            [go, "build", "-o", str(target), "."],
            cwd=source,
            env=_go_env(),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, f"building deploycheck failed:\n{result.stderr}"
        return target


def yaml_documents(deploycheck: Path, text: str) -> list[Any]:
    """The documents of a YAML stream (read by deploycheck: no PyYAML needed)."""
    result = subprocess.run(
        [str(deploycheck), "yaml2json"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"not YAML: {result.stderr}"
    documents: list[Any] = json.loads(result.stdout)
    return documents


@pytest.fixture(scope="session")
def load_yaml(deploycheck: Path) -> Callable[[Path], Any]:
    """Read a one-document YAML file."""

    def load(path: Path) -> Any:
        (document,) = yaml_documents(deploycheck, path.read_text())
        return document

    return load


def run_kustomize(kustomize: Path, deploycheck: Path, directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(kustomize), "build", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kustomize build {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml_documents(deploycheck, result.stdout) if doc]


def _layered(
    kustomize: Path,
    deploycheck: Path,
    directory: Path,
    components: tuple[str, ...],
    platform: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The production overlay with optional components on top, as an overlay of an overlay; with
    ``platform``, those keys merged into its kefu-platform ConfigMap first."""
    # kustomize takes relative paths only.
    listed = "".join(f"  - {os.path.relpath(COMPONENTS / c, directory)}\n" for c in components)
    production = os.path.relpath(DEPLOY / "k8s" / "overlays" / "production", directory)
    text = (
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {production}\ncomponents:\n{listed}"
    )
    if platform:
        literals = "".join(f"      - {key}={value}\n" for key, value in platform.items())
        text += (
            "configMapGenerator:\n  - name: kefu-platform\n    behavior: merge\n"
            f"    literals:\n{literals}"
        )
    (directory / "kustomization.yaml").write_text(text)
    return run_kustomize(kustomize, deploycheck, directory)


# What a platform team with a SASL_SSL cluster and client certificates puts in platform.env
# beside the kafka-tls component (docs/security.md 9).
SECURED_PLATFORM = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KEDA_KAFKA_SASL": "scram_sha512",
    "KAFKA_SSL_CERTFILE": "/etc/kefu/kafka-tls/tls.crt",
    "KAFKA_SSL_KEYFILE": "/etc/kefu/kafka-tls/tls.key",
}


@pytest.fixture(scope="session")
def rendered(
    kustomize: Path, deploycheck: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[dict[str, Any]]]:
    """Every overlay rendered, production with every optional component on top, and that again
    with the kafka-tls component (listed last) on a secured cluster."""
    out = {
        name: run_kustomize(kustomize, deploycheck, DEPLOY / "k8s" / "overlays" / name)
        for name in OVERLAYS
    }
    optional = ("monitoring", "keda-kafka-lag")  # production has kafka-topics already
    out["production+components"] = _layered(
        kustomize, deploycheck, tmp_path_factory.mktemp("all-components"), optional
    )
    out["production+components+kafka-tls"] = _layered(
        kustomize,
        deploycheck,
        tmp_path_factory.mktemp("kafka-tls"),
        (*optional, "kafka-tls"),
        SECURED_PLATFORM,
    )
    return out


@pytest.fixture(scope="session")
def compose_project(deploycheck: Path) -> dict[str, Any]:
    """The Compose file as `docker compose` reads it: validated, interpolated, env_files merged."""
    compose = DEPLOY / "compose" / "compose.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEFU_", "COMPOSE_"))}
    result = subprocess.run(
        [str(deploycheck), "compose", str(compose)],
        cwd=compose.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"compose-go rejects {compose}:\n{result.stderr}"
    project: dict[str, Any] = json.loads(result.stdout)
    return project


def require_tool(name: str) -> str:
    """A command-line tool from PATH or from the project's virtual environment."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found
