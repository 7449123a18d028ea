#!/usr/bin/env bash
# Runs every benchmark script present in bench/ with its default sizes, one after another
# (they compete for the same two cores, so never in parallel). Each prints a table and writes
# bench/results/<name>.json. Scripts not yet written are skipped; a failing bench is reported
# and the others still run; the exit status is non-zero if any failed.
#
#   bash bench/run_all.sh            # all of them (~1 h on 2 cores: embedding dominates)
#   bash bench/run_all.sh core lexical   # only these
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# Known benches first, in a sensible order (cheap -> expensive); then any other bench/*.py.
KNOWN=(lexical core ingest crash_loop api_latency migration scale faults)
# Arguments for benches whose defaults are not the size run_all should use.
bench_args() {
    case "$1" in
        scale) echo "--chunks 20000" ;;
    esac
}
if [[ $# -gt 0 ]]; then
    NAMES=("$@")
else
    NAMES=("${KNOWN[@]}")
    for script in bench/*.py bench/*/__main__.py; do
        [[ -e "$script" ]] || continue
        name="${script#bench/}"
        name="${name%%/*}"
        name="${name%.py}"
        [[ "$name" == _* ]] && continue
        [[ " ${KNOWN[*]} " == *" $name "* ]] || NAMES+=("$name")
    done
fi

mkdir -p bench/results
failed=()
ran=()
for name in "${NAMES[@]}"; do
    # A bench is a module (bench/NAME.py) or a package run by its __main__ (bench/NAME/).
    if [[ -f "bench/$name.py" ]]; then
        script="bench/$name.py"
    elif [[ -f "bench/$name/__main__.py" ]]; then
        script="bench/$name/"
    else
        echo "== skip $name: neither bench/$name.py nor bench/$name/__main__.py present"
        continue
    fi
    echo "== $script  ($(date '+%H:%M:%S'), load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null))"
    started=$SECONDS
    # shellcheck disable=SC2046  # word splitting of the arguments is intended
    "$PYTHON" -m "bench.$name" $(bench_args "$name")
    status=$?
    if [[ $status -eq 0 ]]; then
        ran+=("$name")
    else
        failed+=("$name")
        echo "== $name FAILED (exit $status)"
    fi
    echo "== $name took $((SECONDS - started))s"
done

echo
echo "ran: ${ran[*]:-none}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "results: bench/results/"
