"""PyTorch eager counterpart of benches/benches/moe.rs: the DeepSeekMoE layer run the way HF's
remote DeepseekMoE does it — `moe_infer` (argsort by expert, one call per expert, scatter-add)
for the forward, and the training path (tokens repeated top_k times, a masked call per expert,
weighted sum) for forward + backward. d 512, 64 routed + 2 shared experts of width 256, top-6,
4,096 tokens, fp32.

Usage: python benches/pytorch/moe_bench.py [--threads 2] [--device cuda]
(fp32; on CUDA TF32 stays off, PyTorch's default for matmul, as burn computes in f32)
"""
import argparse
import json

import torch
import torch.nn as nn
import torch.nn.functional as F
from _timing import timeit

D, E, S, W, K, T = 512, 64, 2, 256, 6, 4096


class Mlp(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.gate_proj = nn.Linear(D, w, bias=False)
        self.up_proj = nn.Linear(D, w, bias=False)
        self.down_proj = nn.Linear(w, D, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Moe(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(D, E, bias=False)
        self.experts = nn.ModuleList([Mlp(W) for _ in range(E)])
        self.shared_experts = Mlp(W * S)

    def route(self, x):
        scores = self.gate(x).softmax(-1)
        w, idx = torch.topk(scores, K, dim=-1, sorted=False)
        return w, idx

    def forward_train(self, x):
        w, idx = self.route(x)
        h = x.repeat_interleave(K, dim=0)
        flat = idx.view(-1)
        y = torch.empty_like(h)
        for j, e in enumerate(self.experts):
            y[flat == j] = e(h[flat == j])
        y = (y.view(*w.shape, -1) * w.unsqueeze(-1)).sum(1)
        return y + self.shared_experts(x)

    @torch.no_grad()
    def forward_infer(self, x):
        w, idx = self.route(x)
        cnts = torch.bincount(idx.view(-1), minlength=E).tolist()
        order = idx.view(-1).argsort()
        sorted_tokens = x[order // K]
        outs, start = [], 0
        for j, n in enumerate(cnts):
            if n:
                outs.append(self.experts[j](sorted_tokens[start:start + n]))
            start += n
        outs = torch.cat(outs)
        new_x = torch.empty_like(outs)
        new_x[order] = outs
        y = (new_x.view(*idx.shape, -1) * w.unsqueeze(-1)).sum(1)
        return y + self.shared_experts(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    m = Moe().to(dev)
    x = torch.randn(T, D, device=dev)
    fwd = timeit(lambda: m.forward_infer(x), device=dev)
    fb = timeit(lambda: m.forward_train(x).sum().backward(), device=dev)
    print(json.dumps({"workload": "deepseekmoe d512 e64+2 w256 top6 t4096", "fwd_s": fwd, "fwd_bwd_s": fb,
                      "threads": args.threads, "device": args.device, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
