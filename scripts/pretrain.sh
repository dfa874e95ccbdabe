#!/usr/bin/env bash
# Rebuilds the bundled base model models/flora-tiny end to end (see models/flora-tiny/README.md):
#   1. the pretraining token stream (WordNet train split + a minority of instruction-formatted
#      WordNet train examples) -> .flora/pretrain/{train,val}.u16, meta.json
#   2. PyTorch pretraining -> models/flora-tiny/{model.safetensors,config.json,generation_config.json}
#      and test/fixtures/flora-tiny-logits.json
# Needs Debian's python3-torch (+ libopenblas0-pthread) at /usr/bin/python3 and Node 22 (npx tsx).
# Extra arguments go to scripts/pretrain.py (e.g. --steps 20 for a quick try; that overwrites the model).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-/usr/bin/python3}"
npx tsx scripts/export-pretrain-tokens.ts --out .flora/pretrain
"$PY" scripts/pretrain.py --data .flora/pretrain --out models/flora-tiny --steps 600 "$@"
