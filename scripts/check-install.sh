#!/usr/bin/env bash
# Installs the packed package into an empty directory on a PATH without a C++ toolchain (no
# cc, gcc, g++, c++, clang, make: every other tool of /usr/bin and /bin is there), then
# trains a few steps with the installed `flora` and checks it ran on the native kernels
# (the prebuilt binary: nothing could compile one). Prints the packed and installed sizes.
#
#   bash scripts/check-install.sh            # packs the working tree (npm pack runs the build)
#   bash scripts/check-install.sh FILE.tgz   # or installs a given tarball
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
node_bin="$(dirname "$(command -v node)")"
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 22 ? 0 : 1)'; then
  node_bin="$root/node_modules/node/bin"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ $# -ge 1 ]; then
  tgz="$(realpath "$1")"
else
  (cd "$root" && PATH="$node_bin:$PATH" npm pack --silent --pack-destination "$work" >/dev/null)
  tgz="$(ls "$work"/*.tgz)"
fi
echo "packed:    $(basename "$tgz") $(du -k "$tgz" | cut -f1) KiB"

# A PATH with everything but compilers and make.
shim="$work/bin"
mkdir -p "$shim"
for dir in /usr/local/bin /usr/bin /bin; do
  for f in "$dir"/*; do
    name="$(basename "$f")"
    case "$name" in
      cc|gcc|g++|c++|cpp|clang|clang++|make|gmake|*-gcc|*-g++|*-gcc-[0-9]*|*-g++-[0-9]*|gcc-[0-9]*|g++-[0-9]*|cpp-[0-9]*|*-cpp|*-cpp-[0-9]*) continue ;;
    esac
    [ -e "$shim/$name" ] || ln -s "$f" "$shim/$name"
  done
done
export PATH="$node_bin:$shim"
for tool in g++ c++ make cc; do
  if command -v "$tool" >/dev/null 2>&1; then echo "check-install: $tool is still on PATH" >&2; exit 1; fi
done

app="$work/app"
mkdir -p "$app"
cd "$app"
npm init -y >/dev/null
npm install --no-audit --no-fund --foreground-scripts "$tgz" 2>&1 | tee "$work/install.log" | grep -E "flora: native kernels|ERR" || true
grep -q "flora: native kernels ready: using the prebuilt" "$work/install.log" || { echo "check-install: the install did not use the prebuilt kernels" >&2; exit 1; }
echo "installed: $(du -sk node_modules | cut -f1) KiB in node_modules"

# Piped: JSON lines (one event per line).
out="$(npx --no-install flora train --steps 3 --max-train 24 --max-eval 8 --no-save --samples 0 2>&1)"
echo "$out" | grep -E '"event":"(backend|eval|train_done)"' | cut -c1-160
echo "$out" | grep -q '"event":"backend".*"native":{"isa":"[^"]*".*"prebuilt":true' || { echo "check-install: training did not run on the prebuilt native kernels" >&2; echo "$out" | tail -20 >&2; exit 1; }
echo "check-install: OK (installed without a toolchain; trained on the prebuilt native kernels)"
