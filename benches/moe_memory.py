"""Parameter counts and per-device training memory of ESFT on DeepSeek-V2-Lite and DeepSeek-V2 (README, "Beyond one device").

The published configs: hidden size, layers, experts, widths, MLA ranks. bf16 frozen weights (2 B); a
trained parameter adds an fp32 master copy, fp32 gradient and two fp32 Adam moments (16 B).
Activations are not counted. Run: python3 benches/moe_memory.py
"""
def counts(name, L, d, dense_ff, E, shared_w, moe_w, vocab, heads, q_lora, kv_lora=512, nope=128, rope=64, vdim=128):
    qk = nope + rope
    if q_lora:
        q = d*q_lora + q_lora + q_lora*heads*qk
    else:
        q = d*heads*qk
    kv = d*(kv_lora+rope) + kv_lora + kv_lora*heads*(nope+vdim)
    o = heads*vdim*d
    attn = q + kv + o + 2*d  # + 2 norms
    dense = 3*d*dense_ff
    expert = 3*d*moe_w
    shared = 3*d*shared_w
    gate = E*d
    emb = vocab*d*2 + d
    total_experts = (L-1)*E*expert
    non_expert = emb + L*attn + dense + (L-1)*(shared+gate)
    total = non_expert + total_experts
    return dict(name=name, L=L, E=E, attn=attn, expert=expert, total=total, experts=total_experts, non_expert=non_expert)

lite = counts("V2-Lite", 27, 2048, 10944, 64, 2816, 1408, 102400, 16, None)
v2 = counts("V2", 60, 5120, 12288, 160, 3072, 1536, 102400, 128, 1536)
GB = 1e9
for m in (lite, v2):
    print(m['name'], "total %.2fB" % (m['total']/1e9), "routed experts %.2fB" % (m['experts']/1e9), "non-expert %.2fB" % (m['non_expert']/1e9), "one expert %.2fM" % (m['expert']/1e6))
    for f in (0.1, 0.25):
        trained = f*m['experts']
        # bf16 weights 2 B; trained params: fp32 master 4 + Adam m,v 8 + fp32 grad 4 = 16 B
        for N in (1, 8, 16):
            dp = (2*m['total'] + 16*trained)/GB
            ep = (2*m['non_expert'] + 2*m['experts']/N + 16*trained/N)/GB
            print("  f=%.2f N=%2d  DP per device %.1f GB   EP per device %.1f GB" % (f, N, dp, ep))
    # FFT for comparison
    print("  FFT DP per device %.1f GB" % ((2*m['total'] + 16*m['total'])/GB))
