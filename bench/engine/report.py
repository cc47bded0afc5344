#!/usr/bin/env python3
"""Joins bench/engine's CSV (kvtier-engine) and hf_baseline.py's CSV into one Markdown table with the
ratios the targets name, and a plot. Usage: report.py engine.csv hf.csv table.md plot.png"""
import csv
import sys


def load(path):
    try:
        with open(path) as f:
            return {r["metric"]: (float(r["value"]), r["unit"], r["note"]) for r in csv.DictReader(f)}
    except FileNotFoundError:
        return {}


def main():
    eng, hf = load(sys.argv[1]), load(sys.argv[2])
    lines = ["| what | kvtier-engine (CUDA) | baseline (same run) | ratio |", "| --- | ---: | ---: | ---: |"]

    def pair(name, e, b, unit, better_lower=True):
        if e not in eng:
            return
        ev = eng[e][0]
        bv = hf[b][0] if b in hf else None
        ratio = f"{ev / bv:.2f}x" if bv else ""
        lines.append(f"| {name} | {ev:.1f} {unit} | {'' if bv is None else f'{bv:.1f} {unit}'} | {ratio} |")

    for n in (2048, 8192, 32768):
        pair(f"prefill {n} tokens (ms)", f"prefill {n} tokens", f"HF prefill {n} tokens", "ms")
        pair(f"prefill {n} tokens (TFLOP/s)", f"prefill {n} TFLOP/s", f"HF prefill {n} TFLOP/s", "TFLOP/s")
    for n in (2048, 8192, 32768):
        pair(f"prefill attention kernel {n}, 1 layer (TFLOP/s) vs torch SDPA", f"flash_prefill kernel {n} TFLOP/s",
             f"torch SDPA kernel {n} TFLOP/s", "TFLOP/s")
    for k, (v, u, note) in eng.items():
        if k.startswith(("decode", "TTFT", "I/O floor", "suffix", "ceiling", "file tier")):
            lines.append(f"| {k} | {v:.3f} {u} | | {note} |")
    table = "\n".join(lines)
    print(table)
    with open(sys.argv[3], "w") as f:
        f.write(table + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        ns = [2048, 8192, 32768]
        ax[0].plot(ns, [eng.get(f"prefill {n} tokens", (0,))[0] for n in ns], "o-", label="kvtier-engine CUDA")
        ax[0].plot(ns, [hf.get(f"HF prefill {n} tokens", (0,))[0] for n in ns], "s-", label="HF transformers (sdpa)")
        ax[0].set_xscale("log", base=2)
        ax[0].set_yscale("log")
        ax[0].set_xlabel("prompt tokens")
        ax[0].set_ylabel("prefill ms (llama3-8b, H200)")
        ax[0].legend()
        names = [k for k in eng if k.startswith(("TTFT (a)", "TTFT (b)", "TTFT (c) prefix", "TTFT (d)", "I/O floor", "suffix"))
                 and eng[k][1] == "ms"]
        ax[1].barh(names, [eng[k][0] for k in names])
        ax[1].set_xscale("log")
        ax[1].set_xlabel("ms")
        ax[1].set_title("32,256 cached + 512 new tokens")
        fig.tight_layout()
        fig.savefig(sys.argv[4], dpi=110)
    except Exception as e:  # the table matters more than the plot
        print("plot skipped:", e)


if __name__ == "__main__":
    main()
