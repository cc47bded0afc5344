#!/usr/bin/env python3
"""Baseline for kvtier-bench-decode-attention: PyTorch's scaled_dot_product_attention for one query
row per sequence over contiguous bf16 KV (B, 8 kv heads, context, 128) with 32 query heads (GQA),
the shapes the kvtier bench runs. Layers rotate over distinct KV tensors (at least 1 GiB in all) so
that L2 holds none. Prints and writes CSV: batch,context,us_per_layer,backend.

  python3 bench/engine/decode_attention_torch.py out.csv
"""
import math
import sys

import torch
import torch.nn.functional as F

Q_HEADS, KV_HEADS, DIM = 32, 8, 128


def time_sdpa(batch, ctx):
    dev = torch.device("cuda")
    layer_bytes = batch * ctx * KV_HEADS * DIM * 2 * 2
    rot = int(min(64, max(2, math.ceil((1 << 30) / layer_bytes))))
    kvs = [(torch.randn(batch, KV_HEADS, ctx, DIM, device=dev, dtype=torch.bfloat16),
            torch.randn(batch, KV_HEADS, ctx, DIM, device=dev, dtype=torch.bfloat16)) for _ in range(rot)]
    q = torch.randn(batch, Q_HEADS, 1, DIM, device=dev, dtype=torch.bfloat16)

    def run(l):
        k, v = kvs[l]
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    for l in range(rot):
        run(l)
    torch.cuda.synchronize()
    reps = max(1, 256 // rot)
    best = float("inf")
    for _ in range(3):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(reps):
            for l in range(rot):
                run(l)
        e1.record()
        torch.cuda.synchronize()
        best = min(best, e0.elapsed_time(e1) * 1e3 / (reps * rot))
    del kvs
    torch.cuda.empty_cache()
    return best


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "decode_attention_torch.csv"
    rows = []
    for ctx in (2048, 6144, 16384):
        for batch in (1, 4, 8, 16, 32):
            us = time_sdpa(batch, ctx)
            rows.append((batch, ctx, us))
            print(f"torch sdpa  batch {batch:3d}  context {ctx:6d}  {us:9.2f} us/layer", flush=True)
    with open(out, "w") as f:
        f.write("batch,context,us_per_layer,backend\n")
        for b, c, us in rows:
            f.write(f"{b},{c},{us:.3f},torch-{torch.__version__}-sdpa\n")


if __name__ == "__main__":
    main()
