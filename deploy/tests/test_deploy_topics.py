"""The topics and their partition counts (deploy/k8s/components/kafka-topics/topics.txt): every
topic the code names is listed, and create-topics.sh (Compose one-shot and Kubernetes Job) does
what it says, run here against a stand-in kafka-topics.sh that records its calls."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_model import COMPONENTS, code_topics, topics_file

from conftest import cache_dir, require_tool

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
# Stand-in for kafka-topics.sh: records each call (and a copy of its --command-config file);
# knows the topics listed in $EXISTING ("name:partitions" words) and answers --describe for
# them as the real tool does.
echo "$*" >> "$CALLS"
topic=""
previous=""
for arg in "$@"; do
    if [ "$previous" = "--topic" ]; then topic=$arg; fi
    if [ "$previous" = "--command-config" ]; then
        cp "$arg" "$CALLS.properties"
        stat -c %a "$arg" > "$CALLS.mode"
    fi
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


@dataclass
class ScriptRun:
    calls: list[str]
    properties_text: str | None  # the --command-config file, as kafka-topics.sh was given it

    @property
    def properties(self) -> dict[str, str]:
        assert self.properties_text is not None, "no --command-config was passed"
        return read_properties(self.properties_text)


def _script(tmp_path: Path, existing: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "kafka-topics.sh"
    fake.write_text(FAKE_KAFKA_TOPICS)
    fake.chmod(0o755)
    return subprocess.run(
        ["sh", str(SCRIPT)],
        env={
            "PATH": os.environ["PATH"],
            "KAFKA_BIN": str(bin_dir),
            "KAFKA_BOOTSTRAP_SERVERS": "broker:9092",
            "CALLS": str(tmp_path / "calls"),
            "EXISTING": existing,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_script(tmp_path: Path, existing: str = "", **env: str) -> ScriptRun:
    """create-topics.sh against the stand-in, which must succeed."""
    result = _script(tmp_path, existing, **env)
    assert result.returncode == 0, result.stderr
    copy = tmp_path / "calls.properties"
    return ScriptRun(
        (tmp_path / "calls").read_text().splitlines(),
        copy.read_text() if copy.exists() else None,
    )


def read_properties(text: str) -> dict[str, str]:
    """A .properties file as java.util.Properties reads it (the subset the script writes: ``=``
    separators, continuation lines, backslash escapes); checked against Java itself below."""
    out: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        line = line.lstrip()
        if not line or line[0] in "#!":
            continue
        while _continues(line):
            line = line[:-1] + next(lines, "").lstrip()
        key, _, value = line.partition("=")
        out[key.strip()] = re.sub(
            r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m[1], m[1]), value
        )
    return out


def _continues(line: str) -> bool:
    """An odd number of trailing backslashes continues the line."""
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def test_script_creates_every_topic_with_its_partitions(tmp_path: Path) -> None:
    calls = run_script(tmp_path, REPLICATION_FACTOR="3", MIN_INSYNC_REPLICAS="2").calls
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
    calls = run_script(tmp_path, existing=existing).calls
    assert not [c for c in calls if "--create" in c and f"--topic {chat.name} " in c]
    (alter,) = [c for c in calls if "--alter" in c]
    assert f"--topic {events.name} --partitions {events.partitions}" in alter


def test_script_applies_the_topic_prefix(tmp_path: Path) -> None:
    calls = run_script(tmp_path, TOPIC_PREFIX="staging.").calls
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


# A password with every character JAAS or .properties treat specially.
HARD_PASSWORD = 'p\\a"ss=w:o rd#!$x'
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"


def _pem(path: Path, label: str) -> Path:
    path.write_text(f"-----BEGIN {label}-----\nMIIB{label[:3]}+/=\nAAAA\n-----END {label}-----\n")
    return path


def test_plaintext_passes_no_client_config(tmp_path: Path) -> None:
    run = run_script(tmp_path, KAFKA_SECURITY_PROTOCOL="PLAINTEXT")
    assert run.properties_text is None
    assert not [c for c in run.calls if "--command-config" in c]


def test_sasl_ssl_writes_the_client_config_for_every_call(tmp_path: Path) -> None:
    ca = _pem(tmp_path / "ca.crt", "CERTIFICATE")
    run = run_script(
        tmp_path,
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        KAFKA_SASL_USERNAME="kefu-topics",
        KAFKA_SASL_PASSWORD=HARD_PASSWORD,
        KAFKA_SSL_CAFILE=str(ca),
    )
    assert all("--command-config /tmp/kefu-kafka-client." in c for c in run.calls)
    jaas_password = HARD_PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
    assert run.properties == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.jaas.config": (
            f'{SCRAM} required username="kefu-topics" password="{jaas_password}";'
        ),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca),
    }
    # Only the Job's user reads it, and it is gone when the script ends.
    assert (tmp_path / "calls.mode").read_text().strip() == "600"
    config = run.calls[0].split("--command-config ", 1)[1].split()[0]
    assert not Path(config).exists()


def test_sasl_plaintext_with_plain_has_no_tls(tmp_path: Path) -> None:
    run = run_script(
        tmp_path,
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM="PLAIN",
        KAFKA_SASL_USERNAME="u",
        KAFKA_SASL_PASSWORD="p",
    )
    assert run.properties == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.jaas.config": (
            'org.apache.kafka.common.security.plain.PlainLoginModule required username="u" '
            'password="p";'
        ),
    }


def test_mutual_tls_inlines_the_client_certificate_and_key(tmp_path: Path) -> None:
    cert = _pem(tmp_path / "tls.crt", "CERTIFICATE")
    key = _pem(tmp_path / "tls.key", "PRIVATE KEY")
    run = run_script(
        tmp_path,
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CERTFILE=str(cert),
        KAFKA_SSL_KEYFILE=str(key),
    )
    assert run.properties == {
        "security.protocol": "SSL",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": cert.read_text(),
        "ssl.keystore.key": key.read_text(),
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL=TLS"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"}, "PASSWORD"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"},
            "KAFKA_SASL_MECHANISM=GSSAPI",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "pässword",
            },
            "KAFKA_SASL_PASSWORD contains characters other than printable ASCII",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.crt"},
            "KAFKA_SSL_CAFILE=/nonexistent/ca.crt",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "/nonexistent/tls.crt"},
            "KAFKA_SSL_KEYFILE",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
                "KAFKA_SSL_CAFILE": "/etc/ca.crt",
            },
            "KAFKA_SSL_* files need KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL",
        ),
    ],
)
def test_an_incomplete_security_configuration_stops_the_script(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = _script(tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "calls").exists(), "it called kafka-topics.sh all the same"


def test_a_given_client_config_is_used_as_it_is(tmp_path: Path) -> None:
    own = tmp_path / "own.properties"
    own.write_text("security.protocol=SSL\n")
    run = run_script(tmp_path, KAFKA_CLIENT_CONFIG=str(own), KAFKA_SECURITY_PROTOCOL="SASL_SSL")
    assert run.properties_text == own.read_text()
    assert all(f"--command-config {own}" in c for c in run.calls)


JAVA_READER = """
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import javax.security.auth.login.AppConfigurationEntry;

// Prints a .properties file as Kafka's tools load it (Utils.loadProps: an InputStream), one
// key and value per line with line breaks escaped, and the JAAS options of sasl.jaas.config as
// a Kafka client parses them (JaasContext) when kafka-clients is on the class path.
public class ReadClientConfig {
    static String line(String s) { return s.replace("\\\\", "\\\\\\\\").replace("\\n", "\\\\n"); }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (InputStream in = Files.newInputStream(Path.of(args[0]))) { props.load(in); }
        for (String key : new java.util.TreeSet<>(props.stringPropertyNames())) {
            System.out.println(line(key) + "=" + line(props.getProperty(key)));
        }
        String jaas = props.getProperty("sasl.jaas.config");
        if (jaas == null) return;
        try {
            Class<?> secret = Class.forName("org.apache.kafka.common.config.types.Password");
            Class<?> context = Class.forName("org.apache.kafka.common.security.JaasContext");
            Object value = secret.getConstructor(String.class).newInstance(jaas);
            Object client = context.getMethod("loadClientContext", Map.class)
                .invoke(null, Map.of("sasl.jaas.config", value));
            List<?> entries = (List<?>) context.getMethod("configurationEntries").invoke(client);
            Map<String, ?> options = ((AppConfigurationEntry) entries.get(0)).getOptions();
            for (String key : new TreeMap<>(options).keySet()) {
                System.out.println("jaas." + key + "=" + line(String.valueOf(options.get(key))));
            }
        } catch (ClassNotFoundException e) {
            System.out.println("jaas=unparsed");
        }
    }
}
"""


def _kafka_class_path() -> str | None:
    """Kafka's client jars from the local runner's cache (deploy/local), if it fetched them."""
    found = sorted(cache_dir().parent.glob("kafka-jars-*/kafka-clients-*.jar"))
    return f"{found[-1].parent}/*" if found else None


def test_java_and_kafka_read_the_client_config_as_meant(tmp_path: Path) -> None:
    """The escaping checked by the JVM itself: java.util.Properties reads the file the script
    wrote as read_properties does, and Kafka's JAAS parser finds the user and password."""
    java = require_tool("java")
    ca = _pem(tmp_path / "ca.crt", "CERTIFICATE")
    cert = _pem(tmp_path / "tls.crt", "CERTIFICATE")
    key = _pem(tmp_path / "tls.key", "PRIVATE KEY")
    run = run_script(
        tmp_path,
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_USERNAME='us"er\\1',
        KAFKA_SASL_PASSWORD=HARD_PASSWORD,
        KAFKA_SSL_CAFILE=str(ca),
        KAFKA_SSL_CERTFILE=str(cert),
        KAFKA_SSL_KEYFILE=str(key),
    )
    config = tmp_path / "client.properties"
    config.write_text(run.properties_text or "")
    source = tmp_path / "ReadClientConfig.java"
    source.write_text(JAVA_READER)
    class_path = _kafka_class_path()
    command = [java, *(["-cp", class_path] if class_path else []), str(source), str(config)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    seen = {}
    for line in result.stdout.splitlines():
        name, _, value = line.partition("=")
        seen[name] = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], value)
    jaas = {k: seen.pop(k) for k in list(seen) if k.startswith("jaas")}
    assert seen == run.properties
    if not class_path:
        pytest.skip("Java reads the file as meant; no kafka-clients jar to parse its JAAS line")
    assert jaas == {"jaas.username": 'us"er\\1', "jaas.password": HARD_PASSWORD}


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
