#!/bin/sh
# prism-eval's container entry point: `prism-eval run` with the image's defaults.
#
#   (no arguments)          evaluate the embedded example bundle
#   BUNDLE [OPTION...]      evaluate BUNDLE: bundle.zip resolves in /in, the working directory
#                           (`-v "$PWD:/in:ro"`); `-` reads a zip from stdin (`docker run -i`)
#   OPTION...               options only: evaluate the embedded example with them
#   COMMAND [ARG...]        any other command: doctor, verify, report, leaderboard, export, ...
#
# Mount points: locked data at /data (its MANIFEST.json) replaces the embedded data unless
# --data or $PRISM_EVAL_DATA says otherwise; held-out data at /heldout is passed as --heldout;
# the signing key at /run/secrets/prism_eval_signing_key is read by prism-eval itself; records
# go to stdout (and with --out /out, to a mounted /out). PRISM_EVAL_IMAGE_DIGEST, when the
# engine or the operator sets it, is written into the record (evaluator.image_digest).
set -eu

EXAMPLE_BUNDLE=/opt/prism-eval/examples/bundles/ok_tiny_transformer
EMBEDDED_DATA=/opt/prism-eval/data

# podman fills /run/.containerenv for privileged containers only; use it when it is there.
if [ -z "${PRISM_EVAL_IMAGE_DIGEST:-}" ] && [ -r /run/.containerenv ]; then
    image_id=$(sed -n 's/^imageid="\([0-9a-f]\{64\}\)"$/\1/p' /run/.containerenv)
    if [ -n "$image_id" ]; then
        export PRISM_EVAL_IMAGE_DIGEST="sha256:$image_id"
    fi
fi
if [ -f /data/MANIFEST.json ] && [ "${PRISM_EVAL_DATA:-$EMBEDDED_DATA}" = "$EMBEDDED_DATA" ]; then
    export PRISM_EVAL_DATA=/data
fi

case "${1:-}" in
    run) shift ;;
    verify | review | export | report | leaderboard | keygen | schema | doctor | data | -h \
    | --help | --version)
        exec prism-eval "$@" ;;
esac
case "${1:-}" in
    -) ;;  # a zip on standard input
    "" | -*) set -- "$EXAMPLE_BUNDLE" "$@" ;;
esac
if [ -f /heldout/MANIFEST.json ]; then
    case " $* " in
        *" --heldout "* | *" --heldout="*) ;;
        *) set -- "$@" --heldout /heldout ;;
    esac
fi
exec prism-eval run "$@"
