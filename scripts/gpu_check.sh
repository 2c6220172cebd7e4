#!/usr/bin/env bash
# The CUDA path in one script, for a host with a GPU (run from the repository root after
# `make install`, or with PRISM_EVAL=/path/to/prism-eval). Nothing here runs on a CPU-only host.
#
#   1. `prism-eval doctor`: the isolation table of a real worker on this host (Landlock and
#      seccomp must leave CUDA working: the worker initializes CUDA under both);
#   2. the example bundle on device cuda, capture_dtype bfloat16 (the official profile's scored
#      precision), twice: both records must be `scored` and carry the same stream digest and
#      bpb (determinism across runs on one GPU), and step 0 must replay exactly;
#   3. the same with --nproc 2 would use CPU ranks (gloo) and is covered by `make test`.
# Prints each record's figures, the train stage's rate and its per-phase step times (record
# run.step_ms); exits non-zero on any difference.
set -euo pipefail
PRISM_EVAL="${PRISM_EVAL:-.venv/bin/prism-eval}"
BUDGET="${BUDGET:-1048576}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/config.yaml" <<YAML
device: cuda
capture_dtype: bfloat16
threads: 0
byte_budget: $BUDGET
max_seq_len: 1024
YAML
"$PRISM_EVAL" doctor
for run in 1 2; do
    "$PRISM_EVAL" run examples/bundles/ok_tiny_transformer --config "$work/config.yaml" \
        > "$work/record-$run.json"
done
python3 - "$work/record-1.json" "$work/record-2.json" <<'PY'
import json, sys

records = [json.load(open(path))["record"] for path in sys.argv[1:]]
for record in records:
    run, audit = record["run"] or {}, record["audit"] or {}
    rate = run.get("bytes", 0) / max(run.get("wall_seconds", 1), 1e-9)
    print(record["status"], record["reason"]["rule_id"], "bpb", (record["score"] or {}).get("bpb"),
          "stream", (record["stream"] or {}).get("sha256"), f"{rate:,.0f} B/s",
          "device", record["environment"].get("device"))
    print("  where a step's time went (ms):", run.get("step_ms"))
    assert record["status"] == "scored", record["reason"]
    assert audit["step0_replayed_nats"] == audit["step0_reported_nats"], audit
first, second = records
assert first["stream"]["sha256"] == second["stream"]["sha256"], "the streams differ"
assert first["score"]["bpb"] == second["score"]["bpb"]
print("gpu check: two runs, one stream digest, step 0 replayed exactly")
PY
