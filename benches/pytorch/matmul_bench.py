"""PyTorch side of benches/benches/foundation.rs `matmul/f32_4096x384x1536`.

Usage: python benches/pytorch/matmul_bench.py [--threads 2]; prints median seconds and GFLOP/s.
"""
import argparse
import json
import statistics
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
args = ap.parse_args()
torch.set_num_threads(args.threads)
a, b = torch.rand(4096, 384), torch.rand(384, 1536)
for _ in range(3):
    a @ b
ts = []
for _ in range(30):
    t = time.perf_counter()
    a @ b
    ts.append(time.perf_counter() - t)
m = statistics.median(ts)
print(json.dumps({"workload": "matmul f32 4096x384x1536", "median_s": m,
                  "gflops": 2 * 4096 * 384 * 1536 / m / 1e9, "threads": args.threads}))
