set terminal pngcairo size 900,560
set output 'serving-h200-sweep.png'
set xlabel 'throughput (requests/s)'
set ylabel 'p90 TTFT (s)'
set logscale y
set key bottom right
set grid
set title 'kvtier-serve on one H200, llama3-8b shape, long-document QA (16 docs, 3.2x the device pool)'
plot '-' using 1:2 with linespoints lw 2 title 'none (6)', '-' using 1:2 with linespoints lw 2 title 'device (6)', '-' using 1:2 with linespoints lw 2 title 'device+host (6)', '-' using 1:2 with linespoints lw 2 title 'device, lpm (6)', '-' using 1:2 with linespoints lw 2 title 'device+host, lpm (6)', '-' using 1:2 with linespoints lw 2 title 'device+host, lpm+strata (6)', '-' using 1:2 with linespoints lw 2 title 'device (2)', '-' using 1:2 with linespoints lw 2 title 'device+host (2)'
5.5286 0.892873
5.7733 6.369038
e
9.9941 2.01708
9.8823 7.803082
e
24.1468 0.154421
33.7891 2.514264
33.7125 10.346535
e
20.4647 1.44791
e
43.5725 3.544125
51.0807 5.936261
e
46.9111 1.157084
58.6481 4.029458
e
6.9593 4.482213
6.9942 13.008598
e
17.7707 1.926247
17.7493 9.340179
17.9617 23.832522
e
