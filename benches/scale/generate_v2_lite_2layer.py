"""A DeepSeek-V2-Lite-sized checkpoint with 2 of its 27 layers, published as the hub does.

Usage: python generate_v2_lite_2layer.py OUT_DIR

DeepSeek-V2-Lite's real dimensions (hidden 2048, vocab 102400, 16 heads, MLA kv_lora_rank 512,
qk_nope 128 / qk_rope 64 / v 128, no q low-rank, 64 routed experts of width 1408 + 2 shared,
top-6 greedy softmax routing, dense FFN 10944, YaRN factor 40 over 4096 positions, mscale 0.707)
but num_hidden_layers 2: layer 0 dense, layer 1 MoE (first_k_dense_replace 1). Weights are random
N(0, 0.02) (seed 0), cast to bfloat16 and saved with save_pretrained(max_shard_size="1GB"):
about 2.2 GB in 3 shards. Not committed: the checkpoint is regenerated where it is measured.
"""
import sys
from pathlib import Path

import torch
import transformers


def main():
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    cfg = transformers.DeepseekV2Config(
        vocab_size=102400, hidden_size=2048, intermediate_size=10944, moe_intermediate_size=1408,
        num_hidden_layers=2, num_attention_heads=16, num_key_value_heads=16, n_routed_experts=64,
        n_shared_experts=2, num_experts_per_tok=6, first_k_dense_replace=1, kv_lora_rank=512,
        q_lora_rank=None, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
        topk_method="greedy", norm_topk_prob=False, routed_scaling_factor=1.0,
        max_position_embeddings=163840, rms_norm_eps=1e-6, bos_token_id=100000, eos_token_id=100001,
        tie_word_embeddings=False,
        rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=40.0,
                             original_max_position_embeddings=4096, beta_fast=32.0, beta_slow=1.0,
                             mscale=0.707, mscale_all_dim=0.707),
    )
    with torch.device("meta"):
        model = transformers.DeepseekV2ForCausalLM(cfg)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
            else:
                p.fill_(1.0)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="1GB")
    (out / "generation_config.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
