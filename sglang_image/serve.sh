#!/bin/sh
# Entrypoint of the sgldeploy serving image: never start SGLang on a weight cache that is not complete.
#
#   serve.sh python3 -m sglang.launch_server --model-path /models/ORG/NAME/SHA …
#
# With SGLDEPLOY_MODEL_DIR set (the pod sets it to the cached commit's directory), the directory must hold the
# prefetch tool's `.complete` marker, written only after every file was verified, and the marker must name
# that directory's commit. Otherwise exit 9 with one line, so the pod restarts instead of loading garbage.
# Without it (weights downloaded on start) the command runs as given.
set -eu
dir="${SGLDEPLOY_MODEL_DIR:-}"
if [ -n "$dir" ]; then
    marker="$dir/.complete"
    if [ ! -f "$marker" ]; then
        echo "error: $dir has no .complete: the weight cache is missing or unverified; the prefetch tool must finish first" >&2
        exit 9
    fi
    sha="$(basename "$dir")"
    if ! grep -q "\"sha\": \"$sha\"" "$marker"; then
        echo "error: $marker does not name commit $sha: the cache holds other weights; run the prefetch tool again" >&2
        exit 9
    fi
fi
if [ "$#" -eq 0 ]; then
    set -- python3 -m sglang.launch_server --help
fi
exec "$@"
