#!/usr/bin/env bash
# Rebuilds the bundled base model models/flora-tiny end to end (see models/flora-tiny/README.md):
#   1. the pretraining token stream (WordNet train split + the skills suite's documents, each
#      4 times, + a minority of instruction-formatted WordNet train examples)
#      -> .flora/pretrain/{train,val}.u16, meta.json
#   2. PyTorch pretraining -> models/flora-tiny/{model.safetensors,config.json,generation_config.json}
#      and test/fixtures/flora-tiny-logits.json
# Needs Debian's python3-torch (+ libopenblas0-pthread) at /usr/bin/python3 and Node 22 (npx tsx).
# Extra arguments go to scripts/pretrain.py (e.g. --steps 20 for a quick try; that overwrites the model).
# 10,000 steps take about 70 min on 2 CPU cores (--threads 1: OpenBLAS runs its own threads).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-/usr/bin/python3}"
npx tsx scripts/export-pretrain-tokens.ts --out .flora/pretrain --suite skills --suite-repeat 4
"$PY" scripts/pretrain.py --data .flora/pretrain --out models/flora-tiny --steps 10000 --threads 1 --eval-every 500 "$@"
