"""deploy/k8s: the example Indexed Job and its NetworkPolicy, checked without a cluster.

No Kubernetes JSON Schema is available offline, so the structure is checked two ways: every
key of every object must be a field of its API type (a table of the fields of the types used,
from the Kubernetes API reference: a typo fails here instead of being dropped by the API
server), and the fields that carry the isolation are checked explicitly.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from prism_eval.supervisor.attest.issuing import SECRET_KEY_PATH

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SECCOMP_PROFILE = ROOT / "deploy" / "seccomp.json"
CONTAINERFILE = ROOT / "Containerfile"

# type → {field: the field's type (None: a scalar or free-form map; "X[]": a list of X)}
FIELDS: dict[str, dict[str, str | None]] = {
    "ConfigMap": {"apiVersion": None, "kind": None, "metadata": "ObjectMeta", "data": None,
                  "binaryData": None, "immutable": None},
    "Job": {"apiVersion": None, "kind": None, "metadata": "ObjectMeta", "spec": "JobSpec"},
    "NetworkPolicy": {"apiVersion": None, "kind": None, "metadata": "ObjectMeta",
                      "spec": "NetworkPolicySpec"},
    "ObjectMeta": {"name": None, "namespace": None, "labels": None, "annotations": None},
    "JobSpec": {"activeDeadlineSeconds": None, "backoffLimit": None, "backoffLimitPerIndex": None,
                "completionMode": None, "completions": None, "manualSelector": None,
                "maxFailedIndexes": None, "parallelism": None,
                "podFailurePolicy": "PodFailurePolicy", "podReplacementPolicy": None,
                "selector": "LabelSelector", "suspend": None, "template": "PodTemplateSpec",
                "ttlSecondsAfterFinished": None},
    "PodFailurePolicy": {"rules": "PodFailurePolicyRule[]"},
    "PodFailurePolicyRule": {"action": None, "onExitCodes": "OnExitCodes",
                             "onPodConditions": "OnPodConditions[]"},
    "OnExitCodes": {"containerName": None, "operator": None, "values": None},
    "OnPodConditions": {"type": None, "status": None},
    "PodTemplateSpec": {"metadata": "ObjectMeta", "spec": "PodSpec"},
    "PodSpec": {"affinity": None, "automountServiceAccountToken": None, "containers": "Container[]",
                "enableServiceLinks": None, "hostIPC": None, "hostNetwork": None, "hostPID": None,
                "imagePullSecrets": None, "initContainers": "Container[]", "nodeSelector": None,
                "priorityClassName": None, "restartPolicy": None, "runtimeClassName": None,
                "securityContext": "PodSecurityContext", "serviceAccountName": None,
                "terminationGracePeriodSeconds": None, "tolerations": "Toleration[]",
                "volumes": "Volume[]"},
    "PodSecurityContext": {"fsGroup": None, "fsGroupChangePolicy": None, "runAsGroup": None,
                           "runAsNonRoot": None, "runAsUser": None,
                           "seccompProfile": "SeccompProfile", "supplementalGroups": None},
    "Toleration": {"effect": None, "key": None, "operator": None, "tolerationSeconds": None,
                   "value": None},
    "Container": {"args": None, "command": None, "env": "EnvVar[]", "image": None,
                  "imagePullPolicy": None, "name": None, "resources": "ResourceRequirements",
                  "securityContext": "SecurityContext", "volumeMounts": "VolumeMount[]",
                  "workingDir": None},
    "EnvVar": {"name": None, "value": None, "valueFrom": None},
    "SecurityContext": {"allowPrivilegeEscalation": None, "capabilities": "Capabilities",
                        "privileged": None, "readOnlyRootFilesystem": None, "runAsGroup": None,
                        "runAsNonRoot": None, "runAsUser": None,
                        "seccompProfile": "SeccompProfile"},
    "Capabilities": {"add": None, "drop": None},
    "SeccompProfile": {"type": None, "localhostProfile": None},
    "ResourceRequirements": {"limits": None, "requests": None},
    "VolumeMount": {"mountPath": None, "name": None, "readOnly": None, "subPath": None},
    "Volume": {"name": None, "configMap": "ConfigMapVolumeSource", "emptyDir": "EmptyDir",
               "persistentVolumeClaim": "PersistentVolumeClaimVolumeSource",
               "secret": "SecretVolumeSource"},
    "ConfigMapVolumeSource": {"defaultMode": None, "items": "KeyToPath[]", "name": None,
                              "optional": None},
    "EmptyDir": {"medium": None, "sizeLimit": None},
    "PersistentVolumeClaimVolumeSource": {"claimName": None, "readOnly": None},
    "SecretVolumeSource": {"defaultMode": None, "items": "KeyToPath[]", "optional": None,
                           "secretName": None},
    "KeyToPath": {"key": None, "mode": None, "path": None},
    "NetworkPolicySpec": {"egress": None, "ingress": None, "podSelector": "LabelSelector",
                          "policyTypes": None},
    "LabelSelector": {"matchExpressions": None, "matchLabels": None},
}  # fmt: skip
# Volumes the evaluator writes to; every other mount must be read-only.
WRITABLE_VOLUMES = {"records", "tmp", "dshm"}


def unknown_fields(value: Any, type_name: str, where: str) -> list[str]:
    """Every key under `value` that is not a field of `type_name` (recursively)."""
    fields = FIELDS[type_name]
    if not isinstance(value, dict):
        return [f"{where}: expected an object ({type_name})"]
    problems = [f"{where}.{key}: not a field of {type_name}" for key in value if key not in fields]
    for key, child_type in fields.items():
        if child_type is None or key not in value:
            continue
        if child_type.endswith("[]"):
            items = value[key]
            if not isinstance(items, list):
                problems.append(f"{where}.{key}: expected a list")
                continue
            for index, item in enumerate(items):
                problems += unknown_fields(item, child_type[:-2], f"{where}.{key}[{index}]")
        else:
            problems += unknown_fields(value[key], child_type, f"{where}.{key}")
    return problems


def _documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc is not None]


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    by_kind: dict[str, dict[str, Any]] = {}
    for name in ("job.yaml", "networkpolicy.yaml"):
        for doc in _documents(name):
            assert doc["kind"] not in by_kind, f"two {doc['kind']} objects"
            by_kind[doc["kind"]] = doc
    return by_kind


@pytest.fixture(scope="module")
def job(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return objects["Job"]


@pytest.fixture(scope="module")
def pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    assert len(pod["containers"]) == 1
    evaluator: dict[str, Any] = pod["containers"][0]
    return evaluator


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {mount["name"]: mount for mount in container["volumeMounts"]}


def _volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {volume["name"]: volume for volume in pod["volumes"]}


def test_every_key_is_a_field_of_its_api_type(objects: dict[str, dict[str, Any]]) -> None:
    expected = {"ConfigMap": "v1", "Job": "batch/v1", "NetworkPolicy": "networking.k8s.io/v1"}
    assert {kind: doc["apiVersion"] for kind, doc in objects.items()} == expected
    problems = [p for kind, doc in objects.items() for p in unknown_fields(doc, kind, kind)]
    assert problems == []


def test_a_misspelled_field_is_caught(job: dict[str, Any]) -> None:
    broken = copy.deepcopy(job)
    context = broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")
    assert unknown_fields(broken, "Job", "Job") == [
        "Job.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem: "
        "not a field of SecurityContext"
    ]


def test_the_job_is_indexed_over_the_bundle_list(
    objects: dict[str, dict[str, Any]], job: dict[str, Any], container: dict[str, Any]
) -> None:
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    bundles = objects["ConfigMap"]["data"]["bundles.txt"].split()
    assert spec["completions"] == len(bundles) > 0
    assert 1 <= spec["parallelism"] <= spec["completions"]
    script = container["args"][0]
    assert "JOB_COMPLETION_INDEX" in script
    # The script reads the list where the ConfigMap is mounted.
    list_volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    assert list_volume["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    list_path = f"{_mounts(container)[list_volume['name']]['mountPath']}/bundles.txt"
    assert list_path in script


def test_the_pod_script_is_valid_shell(container: dict[str, Any]) -> None:
    shell = shutil.which("sh")
    if shell is None:
        pytest.skip("no sh")
    assert container["command"][-2:] == ["/bin/sh", "-c"]
    checked = subprocess.run([shell, "-n", "-c", container["args"][0]], capture_output=True)
    assert checked.returncode == 0, checked.stderr.decode()


def test_exit_codes_follow_the_record_status(job: dict[str, Any], pod: dict[str, Any]) -> None:
    assert pod["restartPolicy"] == "Never"  # required by podFailurePolicy
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {rule["action"] for rule in rules} <= {"FailJob", "FailIndex", "Ignore", "Count"}
    names = {c["name"] for c in pod["containers"]}
    for rule in rules:
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] in names
            assert 0 not in rule["onExitCodes"]["values"]
        if rule["action"] == "FailIndex":
            assert job["spec"].get("backoffLimitPerIndex") is not None


def test_pod_runs_as_the_images_unprivileged_user(pod: dict[str, Any]) -> None:
    user = re.search(r"^USER (\d+):(\d+)$", CONTAINERFILE.read_text(), re.MULTILINE)
    assert user is not None
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"]) == (int(user[1]), int(user[2]))
    assert pod["automountServiceAccountToken"] is False
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))


def test_container_security_context_matches_the_run_line(container: dict[str, Any]) -> None:
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False  # --security-opt no-new-privileges
    assert context["readOnlyRootFilesystem"] is True  # --read-only
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}  # --cap-drop ALL


def test_the_seccomp_profile_is_the_shipped_one(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    for context in (pod["securityContext"], container["securityContext"]):
        profile = context["seccompProfile"]
        assert profile["type"] == "Localhost"
        assert Path(profile["localhostProfile"]).name == SECCOMP_PROFILE.name


def test_the_shipped_seccomp_profile_denies_what_it_should() -> None:
    profile = json.loads(SECCOMP_PROFILE.read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    allowed = [rule for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"]
    denied = {"ptrace", "process_vm_readv", "process_vm_writev", "io_uring_setup",
              "io_uring_enter", "io_uring_register"}  # fmt: skip
    assert not denied & {name for rule in allowed for name in rule["names"]}
    for rule in allowed:
        if {"socket", "socketpair"} & set(rule["names"]):
            assert rule["names"] in (["socket"], ["socketpair"])
            assert rule["args"] == [{"index": 0, "value": 1, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]


def test_the_ranks_profile_differs_only_in_socket_families() -> None:
    strict = json.loads(SECCOMP_PROFILE.read_text())
    ranks = json.loads(SECCOMP_PROFILE.with_name("seccomp-ranks.json").read_text())

    def without_socket(profile: dict[str, Any]) -> list[dict[str, Any]]:
        return [rule for rule in profile["syscalls"] if rule["names"] != ["socket"]]

    assert without_socket(ranks) == without_socket(strict)
    assert {k: v for k, v in ranks.items() if k != "syscalls"} == {
        k: v for k, v in strict.items() if k != "syscalls"
    }
    allowed = [
        {(arg["index"], arg["value"], arg["op"]) for arg in rule["args"]}
        for rule in ranks["syscalls"]
        if rule["names"] == ["socket"] and rule["action"] == "SCMP_ACT_ALLOW"
    ]
    assert allowed == [
        {(0, 1, "SCMP_CMP_EQ")},  # AF_UNIX
        {(0, 2, "SCMP_CMP_EQ")},  # AF_INET
        {(0, 16, "SCMP_CMP_EQ"), (2, 0, "SCMP_CMP_EQ")},  # AF_NETLINK, NETLINK_ROUTE only
    ]


def test_gpu_is_requested(container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
    # Extended resources: a request, when given, must equal the limit.
    assert (
        resources["requests"].get("nvidia.com/gpu", resources["limits"]["nvidia.com/gpu"])
        == (resources["limits"]["nvidia.com/gpu"])
    )
    assert "memory" in resources["limits"]


def test_inputs_are_mounted_read_only(pod: dict[str, Any], container: dict[str, Any]) -> None:
    volumes, mounts = _volumes(pod), _mounts(container)
    assert set(mounts) == set(volumes)
    for name, mount in mounts.items():
        if name in WRITABLE_VOLUMES:
            continue
        assert mount.get("readOnly") is True, f"{name} is mounted writable"
        claim = volumes[name].get("persistentVolumeClaim")
        if claim is not None:
            assert claim.get("readOnly") is True, f"claim {name} is not read-only"
    paths = {mount["mountPath"]: name for name, mount in mounts.items()}
    assert {"/in", "/data", "/heldout", "/tmp", "/records"} <= set(paths)


def test_the_signing_key_is_mounted_where_prism_eval_looks(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    secrets = [v for v in pod["volumes"] if "secret" in v]
    assert len(secrets) == 1
    volume = secrets[0]
    mount = _mounts(container)[volume["name"]]
    assert mount["readOnly"] is True
    if "subPath" in mount:
        paths = [mount["mountPath"]]
    else:
        paths = [f"{mount['mountPath']}/{item['path']}" for item in volume["secret"]["items"]]
    assert paths == [str(SECRET_KEY_PATH)]
    mode = volume["secret"].get("defaultMode", 0o644)
    assert mode & 0o007 == 0, "the key must not be world-readable"
    # Secret files belong to root and the pod's fsGroup: the evaluator reads it as a group member.
    assert mode & 0o040
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_records_go_to_a_writable_volume(pod: dict[str, Any], container: dict[str, Any]) -> None:
    records = _mounts(container)["records"]
    assert not records.get("readOnly", False)
    assert "persistentVolumeClaim" in _volumes(pod)["records"]
    assert "--out" in container["args"][0] and records["mountPath"] in container["args"][0]


def test_network_policy_isolates_the_evaluator_pods(
    objects: dict[str, dict[str, Any]], job: dict[str, Any]
) -> None:
    policy = objects["NetworkPolicy"]["spec"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["ingress"] == [] and policy["egress"] == []
