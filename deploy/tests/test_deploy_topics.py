"""The topics and their partition counts (deploy/k8s/components/kafka-topics/topics.txt): every
topic the code names is listed, and create-topics.sh (Compose one-shot and Kubernetes Job) does
what it says, run here against a stand-in kafka-topics.sh that records its calls."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from deploy_model import COMPONENTS, code_topics, topics_file

from conftest import require_tool

SCRIPT = COMPONENTS / "kafka-topics" / "create-topics.sh"


def test_every_topic_the_code_names_is_created() -> None:
    listed = set(topics_file())
    missing = code_topics() - listed
    assert not missing, f"add to {COMPONENTS / 'kafka-topics' / 'topics.txt'}: {sorted(missing)}"
    unknown = listed - code_topics()
    assert not unknown, f"topics.txt lists topics no code uses: {sorted(unknown)}"


def test_partition_counts_are_sane() -> None:
    for topic in topics_file().values():
        assert 1 <= topic.partitions <= 48, topic
        if topic.name.endswith(".dlq"):
            assert "retention.ms" in topic.configs, f"{topic.name}: keep dead letters long enough"


def test_shellcheck_finds_nothing() -> None:
    shellcheck = require_tool("shellcheck")
    result = subprocess.run(
        [shellcheck, "--shell=sh", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


FAKE_KAFKA_TOPICS = r"""#!/bin/sh
# Stand-in for kafka-topics.sh: records each call; knows the topics listed in $EXISTING
# ("name:partitions" words) and answers --describe for them as the real tool does.
echo "$*" >> "$CALLS"
topic=""
previous=""
for arg in "$@"; do
    if [ "$previous" = "--topic" ]; then topic=$arg; fi
    previous=$arg
done
case " $* " in
    *" --list "*) exit 0 ;;
    *" --describe "*)
        for known in $EXISTING; do
            if [ "${known%%:*}" = "$topic" ]; then
                printf 'Topic: %s\tTopicId: x\tPartitionCount: %s\tReplicationFactor: 1\n' \
                    "$topic" "${known##*:}"
                exit 0
            fi
        done
        echo "Error: Topic '$topic' does not exist" >&2
        exit 1 ;;
esac
exit 0
"""


def _run_script(tmp_path: Path, existing: str = "", **env: str) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kafka-topics.sh"
    fake.write_text(FAKE_KAFKA_TOPICS)
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    result = subprocess.run(
        ["sh", str(SCRIPT)],
        env={
            "PATH": os.environ["PATH"],
            "KAFKA_BIN": str(bin_dir),
            "KAFKA_BOOTSTRAP_SERVERS": "broker:9092",
            "CALLS": str(calls),
            "EXISTING": existing,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return calls.read_text().splitlines()


def test_script_creates_every_topic_with_its_partitions(tmp_path: Path) -> None:
    calls = _run_script(tmp_path, REPLICATION_FACTOR="3", MIN_INSYNC_REPLICAS="2")
    creates = [c for c in calls if "--create" in c]
    assert len(creates) == len(topics_file())
    for topic in topics_file().values():
        (call,) = [c for c in creates if f"--topic {topic.name} " in c]
        assert f"--partitions {topic.partitions} " in call
        assert "--replication-factor 3" in call
        assert "--config min.insync.replicas=2" in call
        assert "--if-not-exists" in call
        assert "--bootstrap-server broker:9092" in call
        for key, value in topic.configs.items():
            assert f"--config {key}={value}" in call


def test_script_keeps_existing_topics_and_raises_too_few_partitions(tmp_path: Path) -> None:
    chat = topics_file()["kefu.inquiry.inbound.chat"]
    events = topics_file()["kefu.inquiry.events"]
    existing = f"{chat.name}:{chat.partitions} {events.name}:1"
    calls = _run_script(tmp_path, existing=existing)
    assert not [c for c in calls if "--create" in c and f"--topic {chat.name} " in c]
    (alter,) = [c for c in calls if "--alter" in c]
    assert f"--topic {events.name} --partitions {events.partitions}" in alter


def test_script_applies_the_topic_prefix(tmp_path: Path) -> None:
    calls = _run_script(tmp_path, TOPIC_PREFIX="staging.")
    creates = [c for c in calls if "--create" in c]
    assert creates
    assert all("--topic staging.kefu." in c for c in creates)


def test_script_fails_without_a_cluster_address(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(SCRIPT)],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "KAFKA_BOOTSTRAP_SERVERS" in result.stderr


@pytest.mark.parametrize("tool", ["compose", "kubernetes"])
def test_both_stacks_run_the_same_script_and_list(tool: str) -> None:
    if tool == "compose":
        text = (COMPONENTS.parents[1] / "compose" / "compose.yaml").read_text()
        assert "../k8s/components/kafka-topics/create-topics.sh" in text
        assert "../k8s/components/kafka-topics/topics.txt" in text
    else:
        text = (COMPONENTS / "kafka-topics" / "kustomization.yaml").read_text()
        assert "topics.txt" in text
        assert "create-topics.sh" in text
