# gnuplot docs/scheduling-validate-h200.gp (from the repository root): the simulator against the
# H200 engine (run 2), every stage and rate of docs/scheduling-validate-h200-stages.csv, before and
# after the step overhead; the band is +-10%.
set terminal pngcairo size 1200,520 font ",10"
set output "docs/scheduling-validate-h200.png"
set datafile separator ","
set multiplot layout 1,2 title "kvtier-simulate vs kvtier-serve-cuda (H200 run 2): every stage and rate, before and after the step overhead"
set key top left
set grid
set logscale xy
set xlabel "engine TTFT p50 and p90 (s)"
set ylabel "simulator (s)"
set xrange [1:30]
set yrange [1:30]
plot x*1.1 with lines dt 2 lc rgb "gray" title "+-10%", x*0.9 with lines dt 2 lc rgb "gray" notitle, x with lines lc rgb "black" notitle, \
  "< grep ',before,' docs/scheduling-validate-h200-stages.csv" using 6:7 with points pt 6 ps 1.3 lc rgb "red" title "before: p50", \
  "< grep ',before,' docs/scheduling-validate-h200-stages.csv" using 9:10 with points pt 4 ps 1.3 lc rgb "red" title "before: p90", \
  "< grep ',after,' docs/scheduling-validate-h200-stages.csv" using 6:7 with points pt 7 ps 1.1 lc rgb "blue" title "after: p50", \
  "< grep ',after,' docs/scheduling-validate-h200-stages.csv" using 9:10 with points pt 5 ps 1.1 lc rgb "blue" title "after: p90"
unset logscale
set xlabel "engine throughput (req/s)"
set ylabel "simulator (req/s)"
set xrange [3:30]
set yrange [3:30]
plot x*1.1 with lines dt 2 lc rgb "gray" title "+-10%", x*0.9 with lines dt 2 lc rgb "gray" notitle, x with lines lc rgb "black" notitle, \
  "< grep ',before,' docs/scheduling-validate-h200-stages.csv" using 12:13 with points pt 6 ps 1.3 lc rgb "red" title "before", \
  "< grep ',after,' docs/scheduling-validate-h200-stages.csv" using 12:13 with points pt 7 ps 1.1 lc rgb "blue" title "after"
unset multiplot
