#!/bin/bash
# hello-lm through burn's wgpu backend over Vulkan on an NVIDIA GPU (run with the `device` tool
# from the repository root). Prepared here first:
#   CARGO_TARGET_DIR=target/wgpu cargo build --release -p xtask --no-default-features --features wgpu
#   mkdir -p .gpubin && strip -o /tmp/x target/wgpu/release/xtask && gzip -9 -c /tmp/x > .gpubin/xtask.gz
#   tar czf .gpubin/bbc.tgz -C target/assets bbc
#   o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   mkdir -p .gl /tmp/amd64/partial && apt-get $o update && (cd .gl && apt-get $o download \
#     libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
# (.gl and .gpubin are listed in .git/info/exclude and carried). The NVIDIA Vulkan ICD is
# libGLX_nvidia.so.0: without libglvnd's libraries wgpu finds "no adapter".
set -x
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
ls /usr/local/nvidia/share/vulkan/icd.d/ /usr/share/vulkan/icd.d/ /etc/vulkan/icd.d 2>&1
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
python3 -c "import torch;print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
TL=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__))")/lib; echo "torch lib: $TL"; ls $TL | head -40
mkdir -p /tmp/bin /tmp/assets; gunzip -c .gpubin/xtask.gz > /tmp/bin/xtask; chmod +x /tmp/bin/xtask
tar xzf .gpubin/bbc.tgz -C /tmp/assets
export PAPERS_ASSETS_DIR=/tmp/assets
cat /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; export VK_LOADER_DEBUG=error,warn
( time /tmp/bin/xtask smoke --device wgpu ) > $OUT/smoke.txt 2>&1; tail -25 $OUT/smoke.txt; unset VK_LOADER_DEBUG
rm -rf /tmp/runs; ( time /tmp/bin/xtask run hello-lm --quick --device wgpu --out /tmp/runs ) > $OUT/quick.txt 2>&1; tail -8 $OUT/quick.txt
( time timeout 300 /tmp/bin/xtask run hello-lm --device wgpu --out /tmp/runs ) > $OUT/full.txt 2>&1; tail -8 $OUT/full.txt
for d in /tmp/runs/hello-lm/*; do cp $d/metrics.json $OUT/$(basename $d).metrics.json; done
ls $OUT
