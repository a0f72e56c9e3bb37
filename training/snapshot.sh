#!/usr/bin/env bash
# Stage a run's state for a commit only when its files all belong to one step: no unfinished
# checkpoint, the same step in train_state.json and metrics.json, and no file changed while staging.
set -euo pipefail
run="${1:?usage: training/snapshot.sh training/<run>}"
stamp() { stat -c '%n %Y %s' "$run"/* 2>/dev/null; }
for _ in $(seq 120); do
    before="$(stamp)"
    if [ ! -e "$run/.pending" ] && python3 - "$run" <<'PY'
import json, sys
run = sys.argv[1]
a = json.load(open(f"{run}/train_state.json"))["step"]
m = json.load(open(f"{run}/metrics.json"))
b = m.get("step", m.get("train", {}).get("step"))  # a checkpoint's metrics, or the final ones
sys.exit(0 if a == b else 1)
PY
    then
        git add "$run"
        if [ ! -e "$run/.pending" ] && [ "$before" = "$(stamp)" ]; then
            echo "staged $run at step $(python3 -c "import json; print(json.load(open('$run/train_state.json'))['step'])")"
            exit 0
        fi
        git reset -q "$run"
    fi
    sleep 1
done
echo "no consistent state found in 120 s" >&2
exit 1
