#!/usr/bin/env bash
# Build the prism-eval image (`make image`): prepare build/image/, then build the Containerfile.
#
#   scripts/build_image.sh [TAG...]      default tags: prism-eval:<version>, prism-eval:latest
#
# Everything the build needs is prepared here, on the host, and cached under build/image/:
#   base/        the default base: `debootstrap --variant=minbase bookworm` (+ python3.11, tini)
#                as a tarball, imported once as localhost/prism-eval-base:bookworm (an image
#                already in the engine's store is reused; REFRESH_BASE=1 makes a new one)
#   wheelhouse/  the third-party wheels (`pip wheel` of the dependencies and TORCH_SPEC), redone
#                only when pyproject.toml, TORCH_SPEC or the host Python change
#   dist/        the project's wheel, rebuilt every time from the working tree (reproducibly)
#   tokenizers/  gpt2.tiktoken: the copy staged in .venv, else scripts/stage_gpt2.py
# so the image build itself runs offline (`--network none` with the default base).
#
# Environment: ENGINE (podman|docker), OCI_RUNTIME (podman), BASE_IMAGE (another base; the
# engine pulls it, and the build may use the network), TORCH_SPEC (default torch==2.13.0, the
# CPU wheel on these machines), HOST_PYTHON (default .venv/bin/python: CPython of the image's
# version), DEBIAN_MIRROR (debootstrap's mirror; default: debootstrap's own), IMAGE_NAME.
set -euo pipefail
LOG_NAME=build_image  # read by log() in image_lib.sh
# shellcheck source=scripts/image_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/image_lib.sh"

TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
HOST_PYTHON="${HOST_PYTHON:-$ROOT/.venv/bin/python}"
IMAGE_NAME="${IMAGE_NAME:-prism-eval}"
CACHE_NAME="localhost/prism-eval-build"   # the venv and app stages, kept as the build cache
BASE_IMAGE="${BASE_IMAGE:-$BASE_IMAGE_LOCAL}"
BASE_SUITE=bookworm
BASE_PACKAGES=python3.11,tini
GPT2_SHA256=306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930

BASE_ROOTFS=""
cleanup() { if [[ -n "$BASE_ROOTFS" ]]; then rm -rf "$BASE_ROOTFS"; fi; }
trap cleanup EXIT

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# ---- the base image -----------------------------------------------------------------------
ensure_base() {
  local dir="$IMAGE_BUILD_DIR/base" tar key have rootfs
  tar="$dir/$BASE_SUITE-minbase.tar"
  key="$BASE_SUITE-minbase+$BASE_PACKAGES"
  # The image in the engine's store is the cache: another checkout on this host (CI's fresh
  # clone) reuses it, and with it every layer built on it. REFRESH_BASE=1 makes a new one.
  have=$(engine image inspect --format '{{ index .Config.Labels "io.prism-eval.base" }}' \
    "$BASE_IMAGE_LOCAL" 2>/dev/null || true)
  if [[ "$have" == "$key" && "${REFRESH_BASE:-0}" != 1 ]]; then return; fi
  mkdir -p "$dir"
  if [[ ! -f "$tar" || "$(cat "$tar.key" 2>/dev/null)" != "$key" || "${REFRESH_BASE:-0}" == 1 ]]; then
    command -v debootstrap >/dev/null || die "the local base needs debootstrap (apt-get install debootstrap)"
    [[ $(id -u) == 0 ]] || die "debootstrap needs root"
    rootfs=$(mktemp -d "$dir/rootfs.XXXXXX")
    BASE_ROOTFS=$rootfs   # removed on exit, whatever happens
    log "debootstrap $BASE_SUITE (minbase + $BASE_PACKAGES); the tarball is kept in $dir"
    # shellcheck disable=SC2086  # DEBIAN_MIRROR is one optional word
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" "$rootfs" \
      ${DEBIAN_MIRROR:-} >"$dir/debootstrap.log" 2>&1 \
      || { tail -20 "$dir/debootstrap.log" >&2; die "debootstrap failed (log: $dir/debootstrap.log)"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
      "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/*
    tar --numeric-owner --sort=name -C "$rootfs" -cf "$tar.tmp" .
    rm -rf "$rootfs"
    mv "$tar.tmp" "$tar"
    echo "$key" >"$tar.key"
  fi
  log "importing $tar as $BASE_IMAGE_LOCAL"
  engine import --change "LABEL io.prism-eval.base=$key" \
    --change "LABEL io.prism-eval.base-sha256=$(sha256_of "$tar")" \
    --change 'CMD ["/bin/bash"]' "$tar" "$BASE_IMAGE_LOCAL" >/dev/null
}

# ---- the wheelhouse -----------------------------------------------------------------------
ensure_wheelhouse() {
  local wheelhouse="$IMAGE_BUILD_DIR/wheelhouse" key tmp
  key=$( { sha256sum <"$ROOT/pyproject.toml"; echo "$TORCH_SPEC"; "$HOST_PYTHON" -VV; uname -m; } \
         | sha256sum | cut -d' ' -f1)
  if [[ -f "$wheelhouse/requirements.txt" && "$(cat "$wheelhouse/.key" 2>/dev/null)" == "$key" ]]; then
    return
  fi
  log "collecting the third-party wheels ($TORCH_SPEC) into $wheelhouse"
  tmp="$IMAGE_BUILD_DIR/wheelhouse.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  "$HOST_PYTHON" -c 'import tomllib, sys
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
    "$ROOT/pyproject.toml" >"$tmp/dependencies.in"
  "$HOST_PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$tmp" \
    -r "$tmp/dependencies.in" "$TORCH_SPEC" pip >"$tmp.log" 2>&1 \
    || { tail -30 "$tmp.log" >&2; die "pip wheel failed (log: $tmp.log)"; }
  rm -f "$tmp.log"
  # Pin exactly what was collected: name==version from each wheel's file name (PEP 427).
  ( cd "$tmp" && for wheel in *.whl; do
      IFS=- read -r name version _ <<<"$wheel"
      [[ "$name" == pip ]] || echo "$name==$version"
    done ) | sort >"$tmp/requirements.txt"
  echo "$key" >"$tmp/.key"
  rm -rf "$wheelhouse"
  mv "$tmp" "$wheelhouse"
}

# ---- the project's wheel ------------------------------------------------------------------
build_project_wheel() {
  local dist="$IMAGE_BUILD_DIR/dist" src out wheel
  src=$(mktemp -d "$IMAGE_BUILD_DIR/src.XXXXXX")
  out=$(mktemp -d "$IMAGE_BUILD_DIR/out.XXXXXX")
  # A clean copy: setuptools' in-tree build/ would otherwise leak stale modules into the wheel.
  tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md prism_eval \
    | tar -C "$src" -xf -
  # A fixed timestamp makes the wheel a function of the sources, so unchanged code keeps the
  # image's layers cached.
  SOURCE_DATE_EPOCH=315532800 "$HOST_PYTHON" -m pip wheel --quiet --disable-pip-version-check \
    --no-deps --no-build-isolation --wheel-dir "$out" "$src" >"$out.log" 2>&1 \
    || { cat "$out.log" >&2; die "building the project's wheel failed"; }
  rm -f "$out.log"
  wheel=$(ls "$out"/*.whl)
  mkdir -p "$dist"
  if ! cmp -s "$wheel" "$dist/$(basename "$wheel")"; then
    rm -f "$dist"/*.whl
    mv "$wheel" "$dist/"
  fi
  rm -rf "$src" "$out"
  log "project wheel: $(basename "$(ls "$dist"/*.whl)")"
}

# ---- the gpt2 tokenizer -------------------------------------------------------------------
stage_tokenizer() {
  local target="$IMAGE_BUILD_DIR/tokenizers/gpt2.tiktoken"
  local staged="$ROOT/.venv/share/prism-eval/tokenizers/gpt2.tiktoken"
  if [[ -f "$target" && "$(sha256_of "$target")" == "$GPT2_SHA256" ]]; then return; fi
  mkdir -p "$(dirname "$target")"
  if [[ -f "$staged" && "$(sha256_of "$staged")" == "$GPT2_SHA256" ]]; then
    cp "$staged" "$target"
  else
    "$HOST_PYTHON" "$ROOT/scripts/stage_gpt2.py" --prefix "$IMAGE_BUILD_DIR/gpt2-prefix"
    cp "$IMAGE_BUILD_DIR/gpt2-prefix/share/prism-eval/tokenizers/gpt2.tiktoken" "$target"
  fi
  [[ "$(sha256_of "$target")" == "$GPT2_SHA256" ]] || die "gpt2.tiktoken has the wrong sha256"
}

source_commit() {
  local commit
  commit=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null) || return 0
  # Plumbing only (nothing is written): uncommitted changes make the commit a "-dirty" one.
  git -C "$ROOT" diff-index --quiet HEAD -- 2>/dev/null || commit="$commit-dirty"
  echo "$commit"
}

main() {
  local started version commit tags=() network=()
  started=$(date +%s)
  choose_engine
  [[ -x "$HOST_PYTHON" ]] || die "$HOST_PYTHON is missing: run \`make install\` first"
  version=$("$HOST_PYTHON" -c 'import tomllib; print(tomllib.load(open("'"$ROOT"'/pyproject.toml", "rb"))["project"]["version"])')
  commit=$(source_commit)
  if [[ "$BASE_IMAGE" == "$BASE_IMAGE_LOCAL" ]]; then
    ensure_base
    network=(--network none)   # the local base has Python: nothing to fetch while building
  fi
  ensure_wheelhouse
  build_project_wheel
  stage_tokenizer
  if (( $# )); then for tag in "$@"; do tags+=(-t "$tag"); done
  else tags=(-t "$IMAGE_NAME:$version" -t "$IMAGE_NAME:latest"); fi
  log "building with $ENGINE (${RUNTIME_FLAGS[*]:-default runtime}) from $BASE_IMAGE"
  build() {
    engine build "${RUNTIME_FLAGS[@]}" "${ULIMIT_FLAGS[@]}" "${network[@]}" \
      -f "$ROOT/Containerfile" "$@" \
      --build-arg "BASE_IMAGE=$BASE_IMAGE" \
      --build-arg "VERSION=$version" \
      --build-arg "SOURCE_COMMIT=$commit" \
      "$ROOT" >&2
  }
  # The stages are tagged so that the build cache survives the clean-up below: it removes
  # the untagged images of earlier builds (every image the Containerfile builds carries the
  # io.prism-eval.build label; nobody else's image is touched).
  build --target venv -t "$CACHE_NAME:venv"
  build --target app -t "$CACHE_NAME:app"
  build "${tags[@]}"
  engine image prune -f --filter label=io.prism-eval.build >/dev/null 2>&1 \
    || log "warning: could not prune the untagged images of earlier builds"
  log "built $(printf '%s ' "${tags[@]}" | sed 's/-t //g')in $(since "$started") s" \
    "(source commit ${commit:-unknown})"
}

main "$@"
