"""deploy/k8s/job.yaml, played in a real engine: one Pod per index, as the Job controller would.

`make test-image` (scripts/test_image.sh) uses it in two steps:

    render  write, for each index, the Job's pod template as a Pod that `podman kube play` runs:
            the same image, securityContext, volume mounts and script, JOB_COMPLETION_INDEX
            set, every volume mapped to a local folder, and what podman cannot express or
            reads elsewhere listed on stderr (never an isolation field: `render` refuses to
            change one);
    check   require that the engine applied every isolation field of a played pod: from
            `podman inspect` (user, read-only root, not privileged, no new privileges, no
            added capability, read-only inputs) and from the record's own outer-layer checks,
            made inside the pod (no capability, no_new_privs, read-only root, not root, only
            lo, and the shipped seccomp profile: it refuses socket(AF_INET), the engine's
            default does not).

The script's `--profile official` (GPUs, held-out data required) is replaced by the test's
flags, the only change to the pod's command, and it is printed.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "deploy" / "k8s" / "job.yaml"
PROFILE_FLAG = "--profile official"

# Fields of the pod template podman 4 cannot express, and why dropping them is safe here.
NOT_EXPRESSIBLE = {
    "resources.limits.nvidia.com/gpu": "no device plugin: the played pod runs on the CPU",
    "resources.requests.nvidia.com/gpu": "no device plugin: the played pod runs on the CPU",
    "resources.limits.ephemeral-storage": "podman has no ephemeral-storage accounting",
    "resources.requests.ephemeral-storage": "podman has no ephemeral-storage accounting",
    "tolerations": "no scheduler: one host",
}
# Fields podman accepts and ignores; kept in the pod, named so that nobody reads them as checked.
IGNORED_BY_PODMAN = ("automountServiceAccountToken", "enableServiceLinks", "fsGroup")
# podman 4.3 ignores securityContext.seccompProfile (the engine's default profile would apply,
# silently); it reads the profile from the annotations Kubernetes had before the field, looked
# up by file name under `kube play --seccomp-profile-root`. The field stays; both say the same.
SECCOMP_ANNOTATIONS = (
    "seccomp.security.alpha.kubernetes.io/pod",
    "container.seccomp.security.alpha.kubernetes.io/{container}",
)
# The record's outer-layer checks (made inside the pod) that must be active.
OUTER_LAYERS = ("host_network", "host_read_only_root", "host_capabilities", "host_no_new_privs",
                "host_seccomp", "host_user")  # fmt: skip
ISOLATION_FIELDS = ("securityContext", "hostNetwork", "hostPID", "hostIPC", "restartPolicy")


def job_objects(path: Path = JOB) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(path.read_text()) if doc}


def render_pod(
    index: int, *, image: str, image_digest: str, test_flags: str, folders: dict[str, Path]
) -> tuple[dict[str, Any], list[str]]:
    """The pod of index `index`, and what was changed or dropped (one line each)."""
    objects = job_objects()
    template = objects["Job"]["spec"]["template"]
    spec = copy.deepcopy(template["spec"])
    notes: list[str] = []
    (container,) = spec["containers"]
    container["image"] = image
    container["imagePullPolicy"] = "Never"
    env = [e for e in container["env"] if e["name"] != "PRISM_EVAL_IMAGE_DIGEST"]
    container["env"] = [
        {"name": "JOB_COMPLETION_INDEX", "value": str(index)},  # the Job controller's
        {"name": "PRISM_EVAL_IMAGE_DIGEST", "value": image_digest},
        *env,
    ]
    script = container["args"][0]
    if script.count(PROFILE_FLAG) != 1:
        raise SystemExit(f"the pod script no longer says {PROFILE_FLAG!r} once")
    container["args"] = [script.replace(PROFILE_FLAG, test_flags)]
    notes.append(f"changed: {PROFILE_FLAG!r} -> {test_flags!r} (a CPU test budget)")
    for part in ("limits", "requests"):
        resources = container["resources"][part]
        for name in ("nvidia.com/gpu", "ephemeral-storage"):
            if resources.pop(name, None) is not None:
                key = f"resources.{part}.{name}"
                notes.append(f"dropped: {key}: {NOT_EXPRESSIBLE[key]}")
    if spec.pop("tolerations", None) is not None:
        notes.append(f"dropped: tolerations: {NOT_EXPRESSIBLE['tolerations']}")
    for field in IGNORED_BY_PODMAN:
        notes.append(f"ignored by podman (kept): {field}")
    spec["volumes"] = [_local_volume(v, folders, index, notes) for v in spec["volumes"]]
    profile = Path(spec["securityContext"]["seccompProfile"]["localhostProfile"]).name
    annotations = {
        key.format(container=container["name"]): f"localhost/{profile}"
        for key in SECCOMP_ANNOTATIONS
    }
    notes.append(
        f"added: the seccomp annotations (localhost/{profile}): podman 4.3 ignores "
        "securityContext.seccompProfile, which stays"
    )
    for field in ISOLATION_FIELDS:
        if spec.get(field) != template["spec"].get(field):
            raise SystemExit(f"rendering changed the pod's {field}: refusing")
    if container["securityContext"] != template["spec"]["containers"][0]["securityContext"]:
        raise SystemExit("rendering changed the container's securityContext: refusing")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"prism-eval-index-{index}",
            "labels": template["metadata"]["labels"],
            "annotations": annotations,
        },
        "spec": spec,
    }
    return pod, notes


def _local_volume(
    volume: dict[str, Any], folders: dict[str, Path], index: int, notes: list[str]
) -> Any:
    """Every volume becomes a local folder: the claims, the secret and the list as their
    contents, and the emptyDirs too, because podman 4.3 makes an emptyDir a named volume that
    every pod with the same volume name shares, on disk (no `medium: Memory`)."""
    name = volume["name"]
    kind = next(k for k in volume if k != "name")
    folder = str(folders[name]).replace("{index}", str(index))  # a pod's own emptyDirs
    notes.append(f"mapped: volume {name} ({kind}) -> {folder}")
    return {"name": name, "hostPath": {"path": folder, "type": "Directory"}}


def bundle_list() -> list[str]:
    return job_objects()["ConfigMap"]["data"]["bundles.txt"].split()


def check_played(inspect: dict[str, Any], pod: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """What the engine did not apply of the pod's isolation fields (nothing: [])."""
    (container,) = pod["spec"]["containers"]
    wanted, config = container["securityContext"], inspect["HostConfig"]
    context = pod["spec"]["securityContext"]
    problems = []
    user = f"{context['runAsUser']}:{context['runAsGroup']}"
    if inspect["Config"]["User"] != user:
        problems.append(f"user {inspect['Config']['User']!r}, not {user}")
    if config["ReadonlyRootfs"] is not wanted["readOnlyRootFilesystem"]:
        problems.append("the root file system is writable")
    if config["Privileged"]:
        problems.append("privileged")
    if wanted["allowPrivilegeEscalation"] is False and "no-new-privileges" not in str(
        config.get("SecurityOpt")
    ):
        problems.append(f"no no-new-privileges in {config.get('SecurityOpt')}")
    if config.get("CapAdd"):
        problems.append(f"capabilities added: {config['CapAdd']}")
    read_only = {m["mountPath"] for m in container["volumeMounts"] if m.get("readOnly")}
    for mount in inspect["Mounts"]:
        if mount["Destination"] in read_only and mount.get("RW"):
            problems.append(f"{mount['Destination']} is mounted writable")
    layers = {layer["name"]: layer for layer in record["isolation"]}
    for name in OUTER_LAYERS:
        layer = layers.get(name, {"state": "missing", "detail": ""})
        if layer["state"] != "active":
            problems.append(f"{name} is {layer['state']} inside the pod: {layer['detail']}")
    if "socket(AF_INET) refused" not in layers.get("host_seccomp", {}).get("detail", ""):
        problems.append("socket(AF_INET) is allowed: the engine's seccomp profile, not ours")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="write pod-<index>.yaml for each index")
    render.add_argument("--indices", type=int, required=True)
    render.add_argument("--image", required=True)
    render.add_argument("--image-digest", required=True)
    render.add_argument("--test-flags", required=True)
    render.add_argument("--folder", action="append", default=[], metavar="VOLUME=PATH")
    render.add_argument("--out", type=Path, required=True)
    check = commands.add_parser("check", help="check a played pod against its rendering")
    check.add_argument("inspect", type=Path, help="`podman inspect` of its container")
    check.add_argument("pod", type=Path, help="the rendered pod-<index>.yaml")
    check.add_argument("record", type=Path, help="the record.json the pod wrote")
    arguments = parser.parse_args()
    if arguments.command == "render":
        folders = {k: Path(v) for k, v in (f.split("=", 1) for f in arguments.folder)}
        for index in range(arguments.indices):
            pod, notes = render_pod(
                index,
                image=arguments.image,
                image_digest=arguments.image_digest,
                test_flags=arguments.test_flags,
                folders=folders,
            )
            (arguments.out / f"pod-{index}.yaml").write_text(yaml.safe_dump(pod, sort_keys=False))
        for note in notes:
            print(f"  {note}", file=sys.stderr)
        print("\n".join(bundle_list()[: arguments.indices]))
    else:
        inspected = json.loads(arguments.inspect.read_text())[0]
        pod = yaml.safe_load(arguments.pod.read_text())
        record = json.loads(arguments.record.read_text())["record"]  # the signed document's
        problems = check_played(inspected, pod, record)
        for problem in problems:
            print(f"  not applied: {problem}", file=sys.stderr)
        sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
