"""Where the local runner keeps things.

Two places, on purpose: a *cache* shared by every checkout and profile (downloaded jars, the
built FerretDB binary; slow to make, safe to delete) and a *state dir* per profile (data, logs,
pid files; what `infra down` leaves behind and a wipe resets).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# deploy/local/kefu_local/paths.py -> deploy/local -> the repository root.
LOCAL_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = LOCAL_DIR.parent.parent
KAFKA_POM = LOCAL_DIR / "kafka" / "pom.xml"
FERRETDB_SRC = LOCAL_DIR / "ferretdb"


def cache_dir() -> Path:
    """`$KEFU_CACHE_DIR`, else `$XDG_CACHE_HOME/kefu`, else `~/.cache/kefu`."""
    explicit = os.environ.get("KEFU_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "kefu").resolve()


def content_hash(*files: Path, length: int = 16) -> str:
    """A short digest of the files' names and bytes: a cache key that changes with the sources."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:length]


def kafka_jars_dir() -> Path:
    # Keyed by the pom so a version bump fetches a fresh, unmixed set of jars.
    return cache_dir() / f"kafka-jars-{content_hash(KAFKA_POM)}"


def ferretdb_binary() -> Path:
    # Keyed by the wrapper's sources so an edited go.mod/go.sum/main.go rebuilds.
    key = content_hash(FERRETDB_SRC / "go.mod", FERRETDB_SRC / "go.sum", FERRETDB_SRC / "main.go")
    return cache_dir() / "ferretdb" / f"ferretdb-{key}"


def default_state_dir(profile: str) -> Path:
    """`<repo>/.kefu/<profile>` (git-ignored)."""
    if not profile or "/" in profile or profile.startswith("."):
        raise ValueError(f"invalid profile name: {profile!r}")
    return REPO_ROOT / ".kefu" / profile


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock: two terminals (or test workers) must not download, build or
    start the same thing at once. The OS drops it if the holder dies, so it never goes stale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
