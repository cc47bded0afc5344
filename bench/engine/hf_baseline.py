#!/usr/bin/env python3
"""The baseline of bench/engine, run in the same call: Hugging Face transformers' LlamaForCausalLM at
the llama3-8b shape (random weights, bf16, SDPA attention, built from a LlamaConfig: no download),
prefill of 2K, 8K and 32K tokens (logits of the last token only, as the engine computes), and
PyTorch's SDPA kernel alone at the same lengths (causal, GQA 32/8, head 128, one layer).
Usage: hf_baseline.py out.csv"""
import csv
import sys
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "hf.csv"
    rows = []

    def report(metric, value, unit, note=""):
        rows.append((metric, value, unit, note))
        print(f"{metric:44s} {value:12.3f} {unit:8s} {note}", flush=True)

    torch.manual_seed(0)
    dev = torch.device("cuda")
    L, H, KV, D = 32, 32, 8, 128
    # SDPA kernel alone: one layer's attention.
    for n in (2048, 8192, 32768):
        q = torch.randn(1, H, n, D, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, KV, n, D, device=dev, dtype=torch.bfloat16)
        v = torch.randn(1, KV, n, D, device=dev, dtype=torch.bfloat16)
        f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        f()
        torch.cuda.synchronize()
        t = []
        for _ in range(5):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            f()
            b.record()
            b.synchronize()
            t.append(a.elapsed_time(b))
        ms = median(t)
        fl = 4.0 * D * H * (n * (n + 1) / 2)
        report(f"torch SDPA kernel {n} (1 layer)", ms, "ms", f"{fl / ms / 1e9:.1f} TFLOP/s")
        report(f"torch SDPA kernel {n} TFLOP/s", fl / ms / 1e9, "TFLOP/s", "causal, GQA, bf16")
        del q, k, v

    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=L,
                      num_attention_heads=H, num_key_value_heads=KV, max_position_embeddings=40960,
                      rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    with torch.device(dev):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    print("attention implementation:", model.config._attn_implementation, flush=True)
    macs = L * (4096 * 4096 * 2 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
    with torch.inference_mode():
        for n in (2048, 8192, 32768):
            ids = torch.randint(0, 128256, (1, n), device=dev)
            model(ids, use_cache=False, logits_to_keep=1)
            torch.cuda.synchronize()
            t = []
            for _ in range(3):
                t0 = time.perf_counter()
                model(ids, use_cache=False, logits_to_keep=1)
                torch.cuda.synchronize()
                t.append((time.perf_counter() - t0) * 1e3)
            ms = median(t)
            fl = 2.0 * macs * n + 2.0 * 128256 * 4096 + 4.0 * D * H * L * (n * (n + 1) / 2)
            report(f"HF prefill {n} tokens", ms, "ms", f"{fl / ms / 1e9:.1f} TFLOP/s")
            report(f"HF prefill {n} TFLOP/s", fl / ms / 1e9, "TFLOP/s", "LlamaForCausalLM, sdpa, bf16")
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "value", "unit", "note"])
        w.writerows(rows)
    print("wrote", out)


if __name__ == "__main__":
    main()
