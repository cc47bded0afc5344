# gnuplot -e "csv='docs/blend-quality-stories260k.csv'; out='docs/blend-quality-stories260k.png'" bench/blend/plot-quality.gp
# KL gap closed (all prompts pooled) against r, one line per method, from kvtier-blend-quality's CSV.
set datafile separator ','
set terminal pngcairo size 800,500
set output out
set xlabel 'r: share of placed chunk tokens recomputed after the selection layer (%)'
set ylabel 'KL gap closed, naive -> full prefill (%)'
set yrange [0:100]
set xrange [0:32]
set key bottom right
set grid
set arrow from 0,90 to 32,90 nohead dt 2 lc rgb 'gray'
set label 'target (90% at r <= 15%)' at 1,93 tc rgb 'gray'
plot for [m in 'cacheblend gradual question oracle'] \
  '< grep "^all,'.m.'," '.csv using (100*$3):(100*$6) with linespoints title m
