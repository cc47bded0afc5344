#!/usr/bin/env bash
# Plots the compute-or-load TTFT table (docs/compute-or-load-h200.csv's columns) with gnuplot: compute
# only, load only, compute or load and Tc·Tl/(Tc+Tl) against the slow tier's GB/s, for one prefix length.
#   bench/positional/plot_compute_or_load.sh docs/compute-or-load-h200.csv docs/compute-or-load-h200.png [32256]
set -euo pipefail
csv="$1"; png="$2"; prefix="${3:-32256}"
command -v gnuplot >/dev/null || { echo "plot_compute_or_load: gnuplot not installed (scripts/install-deps --bench)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# prefix_tokens,suffix_tokens,gbps,compute_only_ms,load_only_ms,compute_or_load_ms,ideal_ms,meeting_page,pages
awk -F, -v p="$prefix" 'NR > 1 && $1 == p {print $3, $4, $5, $6, $7}' "$csv" | sort -g > "$tmp/rows.dat"
[[ -s "$tmp/rows.dat" ]] || { echo "plot_compute_or_load: no rows for prefix $prefix in $csv" >&2; exit 1; }
suffix=$(awk -F, -v p="$prefix" 'NR > 1 && $1 == p {print $2; exit}' "$csv")
# the balance point: the row whose GB/s is not a power of two (where load only ~ compute only)
balance=$(awk '{l = log($1) / log(2); if (l != int(l)) {print $1; exit}}' "$tmp/rows.dat")
tokens=$(echo "$prefix" | sed -E ':a; s/([0-9])([0-9]{3})($|,)/\1,\2\3/; ta')
gnuplot <<GP
set terminal pngcairo size 900,560 font ',10'
set output '$png'
set title "H200, llama3-8b shape: $tokens cached tokens on a paced tier + $suffix new\n(balance: ${balance:-?} GB/s, where load only = compute only)"
set logscale x 2
set xrange [0.85:19]
set xtics (1, 2, 4, 8, 16)
if ("$balance" ne "") { set xtics add ("$balance" $balance) }
set xlabel 'slow-tier bandwidth (GB/s)'
set ylabel 'TTFT (ms)'
set yrange [0:*]
set grid
set key top right
plot '$tmp/rows.dat' using 1:2 with linespoints pt 7 lw 2 title 'compute only', \
     '' using 1:3 with linespoints pt 5 lw 2 title 'load only', \
     '' using 1:4 with linespoints pt 9 lw 2 title 'compute or load', \
     '' using 1:5 with lines dt 2 lw 1 title 'Tc·Tl/(Tc+Tl)'
GP
echo "wrote $png"
