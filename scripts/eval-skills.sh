#!/usr/bin/env bash
# The comparison of docs/RESULTS.md on the skills suite: FLoRA, flora-pd, FedIT,
# zero-padding, FlexLoRA and FFA, the centralized reference (a learning-rate sweep) and
# local-only, 10 non-IID clients, both rank settings side by side (one process and one
# core each), then merged into OUT/results.{json,md} and plots.
#
#   scripts/eval-skills.sh [OUT] [extra npm run eval flags...]
#   scripts/eval-skills.sh docs/results/skills-epoch --local-steps 30 --central-lr 3e-4,1e-3,3e-3
#                                               # one local epoch per round (~56 min on 2 cores)
#   scripts/eval-skills.sh docs/results/skills  # a third of an epoch per round (~38 min)
#   scripts/eval-skills.sh docs/results/skills-tiny-budget --rounds 10 --local-steps 3 \
#     --strategies flora,flora-pd,fedit,flexlora --no-references   # many small rounds
#
# Progress goes to OUT/homo16.log and OUT/hetero.log.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/eval-skills}"
shift || true
mkdir -p "$OUT"
COMMON=(--data skills --clients 10 --rounds 3 --local-steps 10 --batch-size 8 --seq-len 64 --seeds 5
  --train-examples 2400 --eval-examples 350 --central-lr 1e-3,3e-3,1e-2 "$@")
FLORA_THREADS=1 npx tsx scripts/eval.ts "${COMMON[@]}" --ranks homo16 --out "$OUT/homo16" >"$OUT/homo16.log" 2>&1 &
homo=$!
FLORA_THREADS=1 npx tsx scripts/eval.ts "${COMMON[@]}" --ranks hetero --out "$OUT/hetero" >"$OUT/hetero.log" 2>&1 &
hetero=$!
status=0
wait "$homo" || { echo "homo16 failed: see $OUT/homo16.log" >&2; status=1; }
wait "$hetero" || { echo "hetero failed: see $OUT/hetero.log" >&2; status=1; }
[ "$status" -eq 0 ] || exit "$status"
npx tsx scripts/eval-merge.ts --out "$OUT" "$OUT/homo16" "$OUT/hetero"
