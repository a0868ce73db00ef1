"""Turns the log of benches/gpu/gpu-check.sh into one JSON document (stdout).

Sections are introduced by lines `### <kind> <name> <device>`; inside them it reads libtest's
`test result:` and failure lines, criterion's `--output-format bencher` lines and the PyTorch
scripts' JSON lines.
"""
import json
import re
import sys

out = {"env": {}, "golden": {}, "bench": {}, "pytorch": []}
section = None
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    line = line.rstrip("\n")
    if line.startswith("### "):
        section = line[4:].split()
        continue
    if line.startswith("ENV "):
        k, _, v = line[4:].partition("=")
        out["env"][k] = v
        continue
    if section is None:
        continue
    kind = section[0]
    if kind == "golden":
        key = f"{section[1]}@{section[2]}"
        g = out["golden"].setdefault(key, {"passed": 0, "failed": 0, "failures": [], "ran": False})
        m = re.match(r"test result: \w+\. (\d+) passed; (\d+) failed", line)
        if m:
            g["passed"] += int(m[1])
            g["failed"] += int(m[2])
            g["ran"] = True
        m = re.match(r"test (\S+) \.\.\. FAILED", line)
        if m:
            g["failures"].append({"test": m[1]})
        if "panicked at" in line or line.startswith("  left") or "differs" in line or "max diff" in line:
            g.setdefault("messages", []).append(line.strip()[:300])
    elif kind == "bench":
        m = re.match(r"test (\S+) \.\.\. bench:\s+([\d,]+) ns/iter \(\+/- ([\d,]+)\)", line)
        if m:
            out["bench"].setdefault(section[2], {})[m[1]] = {
                "s": int(m[2].replace(",", "")) / 1e9,
                "pm_s": int(m[3].replace(",", "")) / 1e9,
            }
    elif kind == "pytorch" and line.startswith("{"):
        try:
            out["pytorch"].append(json.loads(line))
        except json.JSONDecodeError:
            pass

# ratios: PyTorch time / burn time (> 1 means burn is faster)
pt = {}
for r in out["pytorch"]:
    if r.get("workload", "").startswith("deepseekmoe"):
        pt["moe_fwd"], pt["moe_fwd_bwd"] = r["fwd_s"], r["fwd_bwd_s"]
    elif r.get("workload", "").startswith("minilm") and r.get("attn", "sdpa") == "sdpa":
        pt["minilm"] = r["median_s"]
    elif r.get("workload", "").startswith("minilm"):
        pt["minilm_eager"] = r["median_s"]
ratios = {}
for dev, b in out["bench"].items():
    for name, v in b.items():
        ref = None
        refs = []
        if name.endswith("_fwd") and not name.endswith("dense_fwd"):
            refs = [("", pt.get("moe_fwd"))]
        elif name.endswith("_fwd_bwd") and "dense" not in name:
            refs = [("", pt.get("moe_fwd_bwd"))]
        elif name.startswith("minilm_l6"):
            refs = [(" vs sdpa", pt.get("minilm")), (" vs eager attention", pt.get("minilm_eager"))]
        for what, ref in refs:
            if ref:
                ratios[f"{name}@{dev}{what}"] = ref / v["s"]
out["pytorch_over_burn"] = ratios
json.dump(out, sys.stdout, indent=1)
print()
