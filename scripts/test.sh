#!/usr/bin/env bash
# Install everything (scripts/setup.sh, idempotent) and run the whole test suite, integration
# tests with the real MiniLM included. Extra arguments go to pytest, e.g.
#   bash scripts/test.sh -m "not integration and not slow"     # the quick unit tests only
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
set +e
"$root/.venv/bin/python" -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "no tests were collected" >&2
    exit 1
fi
exit "$code"
