#!/usr/bin/env bash
# `make test-image`: build the image from a local base, evaluate inside it with the recommended
# run line, evaluate the same bundle outside it, and require equal reproducible record cores.
#
#   1. the tools: podman, buildah, debootstrap, runc, catatonit (podman's pod pause process)
#      (apt, only when one is missing);
#   2. scripts/build_image.sh prism-eval:test (base and wheels cached under build/image/);
#   3. inside, with --network none --read-only --tmpfs /tmp --cap-drop ALL, no-new-privileges,
#      deploy/seccomp.json, --pids-limit and --memory: the outer-layer checks
#      (prism_eval.supervisor.sandbox.host) must all hold; `prism-eval doctor` is printed;
#   4. inside: --nproc 2 under deploy/seccomp.json must end at once as an error
#      (sandbox.ranks_need_tcp: that profile refuses AF_INET);
#   5. inside: /in/bundle.zip with locked data mounted at /data, the key at
#      /run/secrets/prism_eval_signing_key and --out /out; the same zip named as validators
#      type it (bundle.zip, resolved in the working directory /in) and read from stdin (`-`,
#      no /in mount); then options only (the embedded example bundle and data); then the zip
#      again with --nproc 2 under deploy/seccomp-ranks.json;
#   6. outside: .venv/bin/prism-eval run on the same bundle, data, seed, byte budget, threads,
#      with and without --nproc 2;
#   7. deploy/k8s/job.yaml played by `podman kube play` (scripts/play_k8s_job.py renders the
#      Job's pod for indices 0 and 1, the first two lines of bundles.txt: same image,
#      securityContext, seccomp profile and script, JOB_COMPLETION_INDEX set, volumes mapped to
#      local folders); `podman inspect` must show every isolation field applied; each record
#      verifies against the validator key and its core equals the outside run's, and
#      `prism-eval leaderboard` over the records folder ranks both;
#   8. scripts/compare_record_cores.py: each pair of records verifies against the test key and
#      their cores (prism_eval.supervisor.reproduce.core_of, the ranks check's included) are equal; the
#      image's digest and source commit are in the inside records.
# Exits non-zero on any difference, printing it. Removes its containers and files on exit; the
# image prism-eval:test and the build cache stay for the next run.
#
# Environment: BYTE_BUDGET (65536), SEED (1337), THREADS (1), MEMORY (12g), PIDS_LIMIT (1024),
# and those of scripts/build_image.sh.
#
# THREADS=1 (both sides): with several threads, CPU float reductions can be split differently
# from run to run on a heavily loaded host, and a record then differs in the last bits from an
# otherwise identical run (seen inside and outside alike). One thread removes that variable, so
# a difference here means the container changed the evaluation. THREADS=0 uses every core.
set -euo pipefail
LOG_NAME=test_image  # read by log() in image_lib.sh
# shellcheck source=scripts/image_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/image_lib.sh"

IMAGE=prism-eval:test
BYTE_BUDGET="${BYTE_BUDGET:-65536}"
SEED="${SEED:-1337}"
THREADS="${THREADS:-1}"
MEMORY="${MEMORY:-12g}"
PIDS_LIMIT="${PIDS_LIMIT:-1024}"
CONTAINER_UID=10001
PRISM_EVAL="$ROOT/.venv/bin/prism-eval"
PYTHON="$ROOT/.venv/bin/python"
BUNDLE_DIR="$ROOT/examples/bundles/ok_tiny_transformer"
SECOND_BUNDLE_DIR="$ROOT/examples/bundles/ok_reference_interface"  # index 1 of the k8s Job
DATA_DIR="$ROOT/examples/data"

STARTED=$(date +%s)
WORK=""
CONTAINERS=()
PODS=()

cleanup() {
  local name
  for name in "${CONTAINERS[@]}"; do
    "$ENGINE" rm -f "$name" >/dev/null 2>&1 || true
  done
  for name in "${PODS[@]}"; do
    "$ENGINE" pod rm -f "$name" >/dev/null 2>&1 || true
  done
  if [[ -n "$WORK" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

ensure_tools() {
  local missing=() tool
  for tool in podman buildah debootstrap runc catatonit; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if (( ${#missing[@]} == 0 )); then return; fi
  [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]})"
  log "installing ${missing[*]} with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# The recommended run line (deploy/README.md), plus what this host's engine needs. The second
# argument picks the seccomp profile: seccomp (default) or seccomp-ranks (for --nproc > 1).
run_flags() {
  local name=$1 profile=${2:-seccomp}
  CONTAINERS+=("$name")
  printf '%s\n' --rm --name "$name" "${RUNTIME_FLAGS[@]}" "${ULIMIT_FLAGS[@]}" \
    --network none --read-only --tmpfs /tmp --cap-drop ALL \
    --security-opt no-new-privileges --security-opt "seccomp=$ROOT/deploy/$profile.json" \
    --pids-limit "$PIDS_LIMIT" --memory "$MEMORY"
}

zip_bundle() {
  "$PYTHON" - "$1" "$2" <<'EOF'
import sys, zipfile
from pathlib import Path
source, target = Path(sys.argv[1]), Path(sys.argv[2])
with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
    for path in sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        archive.write(path, path.relative_to(source).as_posix())
EOF
}

make_inputs() {
  WORK=$(mktemp -d /tmp/prism-eval-test-image.XXXXXX)
  chmod 0755 "$WORK"
  mkdir -p "$WORK/in" "$WORK/secret" "$WORK/outside" "$WORK/outside-ranks" "$WORK/outside-second" \
    "$WORK/inside-zip" \
    "$WORK/inside-relative" "$WORK/inside-stdin" "$WORK/inside-default" "$WORK/inside-ranks"
  "$PRISM_EVAL" keygen --out "$WORK/test" >/dev/null
  # The container's user reads the key, as a secret mount would let it.
  install -m 0400 -o "$CONTAINER_UID" -g "$CONTAINER_UID" "$WORK/test.key" \
    "$WORK/secret/prism_eval_signing_key"
  chown "$CONTAINER_UID:$CONTAINER_UID" "$WORK/inside-zip" "$WORK/inside-relative" \
    "$WORK/inside-stdin" "$WORK/inside-default" "$WORK/inside-ranks"
  zip_bundle "$BUNDLE_DIR" "$WORK/in/bundle.zip"
  zip_bundle "$SECOND_BUNDLE_DIR" "$WORK/second.zip"
  chmod -R a+rX "$WORK/in" "$WORK/second.zip"
}

check_outer_layers() {
  local flags
  mapfile -t flags < <(run_flags "prism-eval-test-host-$$")
  log "outer layers inside the container (prism_eval.supervisor.sandbox.host):"
  "$ENGINE" run "${flags[@]}" --entrypoint /opt/prism-eval/venv/bin/python "$IMAGE" -c '
import sys
from prism_eval.supervisor.sandbox.host import host_checks
reports = host_checks()
for r in reports:
    print(f"  {r.state:<12} {r.name:<20} {r.detail}")
missing = [r.name for r in reports if r.state != "active"]
if missing:
    print("not held: " + ", ".join(missing), file=sys.stderr)
sys.exit(1 if missing else 0)' >&2 || die "the recommended run line did not give every outer layer"
  mapfile -t flags < <(run_flags "prism-eval-test-doctor-$$")
  log "prism-eval doctor inside the container:"
  "$ENGINE" run "${flags[@]}" "$IMAGE" doctor >&2 || die "doctor failed inside the container"
}

run_inside() {
  local label=$1 out=$2 profile=$3 flags started
  shift 3
  mapfile -t flags < <(run_flags "prism-eval-test-$label-$$" "$profile")
  started=$(date +%s)
  if ! "$ENGINE" run "${flags[@]}" \
      -e "PRISM_EVAL_IMAGE_DIGEST=$IMAGE_DIGEST" \
      -v "$WORK/secret/prism_eval_signing_key:/run/secrets/prism_eval_signing_key:ro" \
      -v "$out:/out" "$@" <"${STDIN_FILE:-/dev/null}" >"$out/stdout.json" 2>"$out/stderr.log"; then
    tail -25 "$out/stderr.log" >&2
    log "the $label evaluation inside the container did not score (its record follows)"
    cat "$out/stdout.json" >&2
    exit 1
  fi
  log "inside ($label): scored in $(since "$started") s"
}

# The strict profile refuses AF_INET, so --nproc 2 must end at once as the evaluator's error
# (exit 5, sandbox.ranks_need_tcp), never as the miner's failure after the scored run.
check_ranks_need_tcp() {
  local flags code=0
  mapfile -t flags < <(run_flags "prism-eval-test-strict-ranks-$$")
  "$ENGINE" run "${flags[@]}" "$IMAGE" --nproc 2 >"$WORK/strict-ranks.json" \
    2>"$WORK/strict-ranks.log" || code=$?
  "$PYTHON" - "$WORK/strict-ranks.json" "$code" <<'EOF' || die "--nproc 2 under the strict profile"
import json, sys
record = json.load(open(sys.argv[1]))["record"]
rule = record["reason"]["rule_id"]
print(f"  strict profile, --nproc 2: exit {sys.argv[2]}, {record['status']} [{rule}]",
      file=sys.stderr)
sys.exit(0 if (sys.argv[2], rule) == ("5", "sandbox.ranks_need_tcp") else 1)
EOF
}

run_outside() {
  local out=$1 started
  shift
  started=$(date +%s)
  "$PRISM_EVAL" run "${OUTSIDE_BUNDLE:-$WORK/in/bundle.zip}" --data "$DATA_DIR" \
    --key "$WORK/test.key" \
    --byte-budget "$BYTE_BUDGET" --seed "$SEED" --threads "$THREADS" --out "$out" "$@" \
    >"$out/stdout.json" 2>"$out/stderr.log" \
    || { tail -25 "$out/stderr.log" >&2; die "the evaluation outside did not score"; }
  log "outside ($*): scored in $(since "$started") s"
}

compare() {
  local label=$1 outside=$2 inside=$3
  log "comparing the reproducible cores: outside vs inside ($label)"
  "$PYTHON" "$ROOT/scripts/compare_record_cores.py" \
    "$outside/record.json" "$inside/record.json" \
    --pubkey "$WORK/test.pub" \
    --stream "$outside/stream.json" --stream "$inside/stream.json" \
    --expect-image-digest "$IMAGE_DIGEST" --expect-source-commit "$SOURCE_COMMIT" >&2
}

# deploy/k8s/job.yaml's pod for indices 0 and 1, played by podman as the Job controller would
# start them; the records land in one records folder, as on the cluster's records volume.
play_k8s_job() {
  if [[ "$ENGINE" != podman ]]; then
    log "k8s: skipped: \`kube play\` needs podman (ENGINE=$ENGINE)"
    return
  fi
  local kube="$WORK/k8s" bundles=() index code record
  mkdir -p "$kube/bundles" "$kube/records" "$kube/list" "$kube/heldout" "$kube/seccomp"
  cp "$ROOT/deploy/seccomp.json" "$kube/seccomp/seccomp.json"  # the node's copy
  # kube play takes no --ulimit; root without CAP_SYS_RESOURCE cannot raise them (image_lib.sh)
  printf '[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n' \
    >"$kube/containers.conf"
  log "k8s: rendering deploy/k8s/job.yaml's pod for indices 0 and 1:"
  mapfile -t bundles < <("$PYTHON" "$ROOT/scripts/play_k8s_job.py" render --indices 2 \
    --image "$IMAGE" --image-digest "$IMAGE_DIGEST" --out "$kube" \
    --test-flags "--profile cpu --byte-budget $BYTE_BUDGET --seed $SEED --threads $THREADS" \
    --folder "bundles=$kube/bundles" --folder "data=$DATA_DIR" --folder "heldout=$kube/heldout" \
    --folder "signing-key=$WORK/secret" --folder "bundle-list=$kube/list" \
    --folder "records=$kube/records" --folder "tmp=$kube/tmp-{index}" \
    --folder "dshm=$kube/dshm-{index}")
  (( ${#bundles[@]} == 2 )) || die "k8s: rendering failed"
  printf '%s\n' "${bundles[@]}" >"$kube/list/bundles.txt"  # the ConfigMap, as mounted
  install -D -m 0644 "$WORK/in/bundle.zip" "$kube/bundles/${bundles[0]}"
  install -D -m 0644 "$WORK/second.zip" "$kube/bundles/${bundles[1]}"
  chmod -R a+rX "$kube"
  chown "$CONTAINER_UID:$CONTAINER_UID" "$kube/records"
  for index in 0 1; do  # each pod's own emptyDirs, world-writable as the kubelet makes them
    mkdir -p "$kube/tmp-$index" "$kube/dshm-$index"
    chmod 1777 "$kube/tmp-$index" "$kube/dshm-$index"
  done
  for index in 0 1; do
    PODS+=("prism-eval-index-$index")
    "$ENGINE" pod rm -f "prism-eval-index-$index" >/dev/null 2>&1 || true  # a past run's
    CONTAINERS_CONF="$kube/containers.conf" "$ENGINE" "${RUNTIME_FLAGS[@]}" kube play \
      --network none --seccomp-profile-root "$kube/seccomp" "$kube/pod-$index.yaml" >/dev/null
  done
  for index in 0 1; do
    code=$("$ENGINE" wait "prism-eval-index-$index-evaluator")
    "$ENGINE" inspect "prism-eval-index-$index-evaluator" >"$kube/inspect-$index.json"
    "$ENGINE" logs "prism-eval-index-$index-evaluator" >"$kube/log-$index.txt" 2>&1 || true
    if [[ "$code" != 0 ]]; then
      tail -25 "$kube/log-$index.txt" >&2
      die "k8s: index $index exited $code"
    fi
    "$PYTHON" "$ROOT/scripts/play_k8s_job.py" check "$kube/inspect-$index.json" \
      "$kube/pod-$index.yaml" "$(ls -d "$kube/records/$index-"*)/record.json" \
      || die "k8s: podman did not apply the pod's isolation (index $index)"
  done
  for index in 0 1; do
    record=$(ls -d "$kube/records/$index-"*)
    "$PRISM_EVAL" verify "$record/record.json" --pubkey "$WORK/test.pub" \
      --stream "$record/stream.json" >"$kube/verified-$index.json" \
      || die "k8s: index $index's record does not verify against the validator key"
    log "k8s: index $index (${bundles[$index]}): $("$PYTHON" -c '
import json, sys
v = json.load(open(sys.argv[1]))
print("verified (%s), %s, bpb %.4f" % (v["identity"], v["status"], v["bpb"]))' \
      "$kube/verified-$index.json")"
  done
  compare "k8s index 0" "$WORK/outside" "$(ls -d "$kube/records/0-"*)"
  compare "k8s index 1" "$WORK/outside-second" "$(ls -d "$kube/records/1-"*)"
  log "k8s: prism-eval leaderboard over the records folder:"
  "$PRISM_EVAL" leaderboard "$kube"/records/*/record.json --pubkey "$WORK/test.pub" >&2 \
    || die "k8s: the leaderboard did not rank the records"
}

main() {
  local phase
  [[ -x "$PRISM_EVAL" ]] || die "$PRISM_EVAL is missing: run \`make install\` first"
  ensure_tools
  choose_engine   # after ensure_tools: podman may have just been installed
  if [[ -f /usr/share/containers/seccomp.json ]] \
      && ! "$PYTHON" "$ROOT/scripts/make_seccomp_profile.py" --check 2>/dev/null; then
    log "warning: deploy/seccomp.json differs from what this host's default profile gives"
  fi

  phase=$(date +%s)
  "$ROOT/scripts/build_image.sh" "$IMAGE"
  BUILD_S=$(since "$phase")
  IMAGE_DIGEST=$("$ENGINE" image inspect --format '{{.Digest}}' "$IMAGE")
  SOURCE_COMMIT=$("$ENGINE" image inspect \
    --format '{{ index .Config.Labels "org.opencontainers.image.revision" }}' "$IMAGE")
  make_inputs

  phase=$(date +%s)
  check_outer_layers
  check_ranks_need_tcp
  run_inside zip "$WORK/inside-zip" seccomp -v "$WORK/in:/in:ro" -v "$DATA_DIR:/data:ro" \
    "$IMAGE" /in/bundle.zip --byte-budget "$BYTE_BUDGET" --seed "$SEED" --threads "$THREADS" \
    --out /out
  run_inside relative "$WORK/inside-relative" seccomp -v "$WORK/in:/in:ro" \
    -v "$DATA_DIR:/data:ro" "$IMAGE" bundle.zip --byte-budget "$BYTE_BUDGET" --seed "$SEED" \
    --threads "$THREADS" --out /out
  STDIN_FILE="$WORK/in/bundle.zip" run_inside stdin "$WORK/inside-stdin" seccomp -i \
    -v "$DATA_DIR:/data:ro" "$IMAGE" - --byte-budget "$BYTE_BUDGET" --seed "$SEED" \
    --threads "$THREADS" --out /out
  run_inside default "$WORK/inside-default" seccomp \
    "$IMAGE" --byte-budget "$BYTE_BUDGET" --seed "$SEED" --threads "$THREADS" --out /out
  run_inside ranks "$WORK/inside-ranks" seccomp-ranks -v "$WORK/in:/in:ro" \
    -v "$DATA_DIR:/data:ro" "$IMAGE" /in/bundle.zip --byte-budget "$BYTE_BUDGET" \
    --seed "$SEED" --threads "$THREADS" --nproc 2 --out /out
  INSIDE_S=$(since "$phase")

  phase=$(date +%s)
  run_outside "$WORK/outside"
  run_outside "$WORK/outside-ranks" --nproc 2
  OUTSIDE_BUNDLE="$WORK/second.zip" run_outside "$WORK/outside-second"
  OUTSIDE_S=$(since "$phase")

  compare zip "$WORK/outside" "$WORK/inside-zip"
  compare "bundle.zip in /in" "$WORK/outside" "$WORK/inside-relative"
  compare "stdin" "$WORK/outside" "$WORK/inside-stdin"
  compare default "$WORK/outside" "$WORK/inside-default"
  compare "ranks, --nproc 2" "$WORK/outside-ranks" "$WORK/inside-ranks"
  phase=$(date +%s)
  play_k8s_job
  KUBE_S=$(since "$phase")
  log "ok: identical reproducible cores; build ${BUILD_S} s, inside ${INSIDE_S} s," \
    "outside ${OUTSIDE_S} s, k8s ${KUBE_S} s, total $(since "$STARTED") s"
}

main "$@"
