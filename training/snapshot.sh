#!/usr/bin/env bash
# Stage a run's state for a commit only when its files all belong to one step.
set -euo pipefail
run="${1:?usage: training/snapshot.sh training/<run>}"
for _ in $(seq 60); do
    if [ ! -e "$run/.pending" ] && python3 - "$run" <<'PY'
import json, sys
run = sys.argv[1]
a = json.load(open(f"{run}/train_state.json"))["step"]
b = json.load(open(f"{run}/metrics.json"))["step"]
sys.exit(0 if a == b else 1)
PY
    then
        git add "$run"
        [ -e "$run/.pending" ] && { git reset -q "$run"; sleep 1; continue; }
        echo "staged $run at step $(python3 -c "import json; print(json.load(open('$run/train_state.json'))['step'])")"
        exit 0
    fi
    sleep 1
done
echo "no consistent state found in 60 s" >&2
exit 1
