# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
# Shared by scripts/build_image.sh and scripts/test_image.sh (sourced, not run).
#
# Chooses the container engine and the flags this kind of host needs:
#   ENGINE=podman|docker      default: podman when installed, else docker
#   OCI_RUNTIME=runc|crun|…   podman only; default runc when installed (Debian 12's podman 4.3
#                             runs rootful only with runc: crun refuses a hybrid cgroup layout)
# Root without CAP_SYS_RESOURCE cannot raise ulimits, so they are always given explicitly.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE_BUILD_DIR="$ROOT/build/image"            # fixed: the Containerfile copies from here
BASE_IMAGE_LOCAL="localhost/prism-eval-base:bookworm"
ULIMIT_FLAGS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

log() { printf '%s: %s\n' "${LOG_NAME:-image}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

choose_engine() {
  if [[ -z "${ENGINE:-}" ]]; then
    if command -v podman >/dev/null 2>&1; then ENGINE=podman
    elif command -v docker >/dev/null 2>&1; then ENGINE=docker
    else die "neither podman nor docker is installed (make test-image installs podman)"
    fi
  fi
  RUNTIME_FLAGS=()
  if [[ "$ENGINE" == podman ]]; then
    local runtime="${OCI_RUNTIME:-}"
    if [[ -z "$runtime" ]] && command -v runc >/dev/null 2>&1; then runtime=runc; fi
    if [[ -n "$runtime" ]]; then RUNTIME_FLAGS=(--runtime "$runtime"); fi
  fi
  export ENGINE
}

engine() { "$ENGINE" "$@"; }

image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

# Elapsed seconds since $1 (an epoch from `date +%s`).
since() { echo $(( $(date +%s) - $1 )); }
