set terminal pngcairo size 900,560
set output 'serving-h200-sweep.png'
set xlabel 'throughput (requests/s)'
set ylabel 'p90 TTFT (s)'
set logscale y
set key bottom right
set grid
set title 'kvtier-serve on one H200, llama3-8b shape, long-document QA (16 docs, 3.2x the device pool)'
plot '-' using 1:2 with linespoints lw 2 title 'device+host, one algorithm (1)', '-' using 1:2 with linespoints lw 2 title 'none (2)', '-' using 1:2 with linespoints lw 2 title 'device (2)', '-' using 1:2 with linespoints lw 2 title 'device+host (2)', '-' using 1:2 with linespoints lw 2 title 'device+host, lpm (2)', '-' using 1:2 with linespoints lw 2 title 'device+host, lpm+strata (2)'
11.9615 0.892954
12.6003 6.452651
12.7003 20.456028
12.6636 47.760896
e
4.2012 2.468775
4.1886 10.415765
4.2952 14.886369
e
6.9593 4.482213
6.8953 7.68714
6.9942 13.008598
e
16.3534 0.546779
17.7707 1.926247
17.7493 9.340179
17.9617 23.832522
e
25.1761 7.604682
24.9003 16.402566
e
25.6127 7.098589
25.4339 15.547623
e
