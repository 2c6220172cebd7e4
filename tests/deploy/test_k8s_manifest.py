"""deploy/k8s: the example Indexed Job and its NetworkPolicy, checked without a cluster.

Two ways: every object is validated, strictly (an unknown field is an error, as a typo would be
dropped by the API server), against the Kubernetes JSON schemas of each supported release that
`kubernetes-validate` ships; and the fields that carry the isolation are checked one by one.
`make test-image` also plays the Job's pod in a real engine (scripts/play_k8s_job.py).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from prism_eval.supervisor.attest.issuing import SECRET_KEY_PATH

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SECCOMP_PROFILE = ROOT / "deploy" / "seccomp.json"
CONTAINERFILE = ROOT / "Containerfile"

# The releases deploy/k8s/README.md says are validated; kubernetes-validate (pinned in
# pyproject.toml) ships their schemas.
KUBERNETES_VERSIONS = ("1.33", "1.34", "1.35", "1.36", "1.37")
# Volumes the evaluator writes to; every other mount must be read-only.
WRITABLE_VOLUMES = {"records", "tmp", "dshm"}


def schema_errors(document: dict[str, Any], version: str) -> list[str]:
    """What the strict schema of `version` says is wrong with `document` (nothing: [])."""
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path)
        return [f"{document['kind']} {where}: {error.message}"]
    return []


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


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_each_supported_release(
    objects: dict[str, dict[str, Any]], version: str
) -> None:
    expected = {"ConfigMap": "v1", "Job": "batch/v1", "NetworkPolicy": "networking.k8s.io/v1"}
    assert {kind: doc["apiVersion"] for kind, doc in objects.items()} == expected
    assert [e for doc in objects.values() for e in schema_errors(doc, version)] == []


def test_a_misspelled_field_fails_with_the_validators_message(tmp_path: Path) -> None:
    """A copy of job.yaml with one letter wrong, as an operator would write it."""
    text = (K8S / "job.yaml").read_text()
    assert text.count("readOnlyRootFilesystem: true") == 1
    copy = tmp_path / "job.yaml"
    copy.write_text(text.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"))
    job = next(d for d in yaml.safe_load_all(copy.read_text()) if d and d["kind"] == "Job")
    assert schema_errors(job, KUBERNETES_VERSIONS[-1]) == [
        "Job spec.template.spec.containers.0.securityContext: Additional properties are not "
        "allowed ('readOnlyRootFileSystem' was unexpected)"
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


def _play_script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "play_k8s_job", ROOT / "scripts" / "play_k8s_job.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_played_pod_keeps_every_isolation_field(tmp_path: Path, job: dict[str, Any]) -> None:
    """`make test-image` plays this pod; what podman cannot express is named, never isolation."""
    play = _play_script()
    volumes = [v["name"] for v in job["spec"]["template"]["spec"]["volumes"]]
    folders = {name: tmp_path / f"{name}-{{index}}" for name in volumes}
    pod, notes = play.render_pod(
        1, image="prism-eval:test", image_digest="sha256:x", test_flags="--profile cpu",
        folders=folders,
    )  # fmt: skip
    template = job["spec"]["template"]["spec"]
    spec = pod["spec"]
    for field in ("securityContext", "hostNetwork", "hostPID", "hostIPC", "restartPolicy"):
        assert spec[field] == template[field], field
    (container,) = spec["containers"]
    assert container["securityContext"] == template["containers"][0]["securityContext"]
    assert container["volumeMounts"] == template["containers"][0]["volumeMounts"]
    assert {"name": "JOB_COMPLETION_INDEX", "value": "1"} in container["env"]
    assert {v["hostPath"]["path"] for v in spec["volumes"]} == {
        str(tmp_path / f"{name}-1") for name in volumes
    }
    assert "--profile official" not in container["args"][0]
    dropped = sorted(n.split(":")[1].strip() for n in notes if n.startswith("dropped:"))
    assert dropped == [
        "resources.limits.ephemeral-storage",
        "resources.limits.nvidia.com/gpu",
        "resources.requests.ephemeral-storage",
        "resources.requests.nvidia.com/gpu",
        "tolerations",
    ]
    assert all(set(v) == {"name", "hostPath"} for v in spec["volumes"])  # local folders
    # podman reads the shipped profile from the annotations, the field stays as written
    annotations = pod["metadata"]["annotations"]
    assert set(annotations.values()) == {"localhost/seccomp.json"}
    assert "container.seccomp.security.alpha.kubernetes.io/evaluator" in annotations
    assert schema_errors(pod, KUBERNETES_VERSIONS[-1]) == []  # still a valid Pod
