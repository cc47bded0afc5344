#!/usr/bin/env bash
# The bench/engine plot with gnuplot (where matplotlib is missing): prefill ms of kvtier-engine and
# the HF baseline by prompt length, and the TTFT bars. Usage: plot.sh engine.csv hf.csv out.png
set -euo pipefail
eng=$1 hf=$2 out=$3 tmp=$(mktemp -d)
val() { python3 -c 'import csv, sys; print(next(r["value"] for r in csv.DictReader(open(sys.argv[1])) if r["metric"] == sys.argv[2]))' "$1" "$2"; }
for n in 2048 8192 32768; do
  echo "$n $(val "$eng" "prefill $n tokens") $(val "$hf" "HF prefill $n tokens")"
done >"$tmp/prefill.dat"
i=0
for m in "TTFT (a) prefix recomputed" "TTFT (b) prefix on the device" "suffix compute" \
         "I/O floor (prefix bytes / contiguous H2D)" "TTFT (c) prefix in pinned host, staged" \
         "TTFT (d) prefix on the file tier"; do
  v=$(val "$eng" "$m" 2>/dev/null) || continue  # (d) is absent without liburing
  echo "$i \"${m/ (prefix bytes \/ contiguous H2D)/}\" $v"; i=$((i + 1))
done >"$tmp/ttft.dat"
gnuplot <<GP
set terminal pngcairo size 1200,420 font ",10"
set output "$out"
set multiplot layout 1,2
set title "llama3-8b prefill, H200"
set logscale xy 2
set xlabel "prompt tokens"; set ylabel "ms"; set key top left
plot "$tmp/prefill.dat" u 1:2 w lp pt 7 t "kvtier-engine CUDA", "" u 1:3 w lp pt 5 t "HF transformers (sdpa)"
unset logscale; set logscale x 10
set title "TTFT, 32,256 cached + 512 new tokens"
set xlabel "ms"; unset ylabel; set ytics (); set yrange [-0.5:5.5]; set xrange [10:10000]
set style fill solid 0.6
plot "$tmp/ttft.dat" u (\$3/2):1:(\$3/2):(0.35):ytic(2) w boxxy notitle, "" u 3:1:(sprintf(" %.1f", \$3)) w labels left notitle
unset multiplot
GP
rm -rf "$tmp"
