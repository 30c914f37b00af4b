# Plots of sweep.csv (vitc sweep): run in this folder with gnuplot sweep.gp
set terminal pngcairo size 900,620 font ",10"
set grid
set key outside right
set xlabel "pruning ratio (% of heads and MLP units)"
set output 'sweep_accuracy.png'
set title "top-1 against pruning (unpruned fp32 90.53%)"
set ylabel "top-1 (%)"
plot 'sweep_plot.dat' index 0 using 1:2 with linespoints lc 1 dt 1 pt 5 title "magnitude fp32", \
     'sweep_plot.dat' index 1 using 1:2 with linespoints lc 2 dt 1 pt 5 title "magnitude fp16", \
     'sweep_plot.dat' index 2 using 1:2 with linespoints lc 3 dt 1 pt 5 title "magnitude int8", \
     'sweep_plot.dat' index 3 using 1:2 with linespoints lc 4 dt 1 pt 5 title "magnitude int4", \
     'sweep_plot.dat' index 4 using 1:2 with linespoints lc 1 dt 2 pt 7 title "taylor fp32", \
     'sweep_plot.dat' index 5 using 1:2 with linespoints lc 2 dt 2 pt 7 title "taylor fp16", \
     'sweep_plot.dat' index 6 using 1:2 with linespoints lc 3 dt 2 pt 7 title "taylor int8", \
     'sweep_plot.dat' index 7 using 1:2 with linespoints lc 4 dt 2 pt 7 title "taylor int4", \
     'sweep_plot.dat' index 8 using 1:2 with linespoints lc 1 dt 3 pt 9 title "hessian-fisher fp32", \
     'sweep_plot.dat' index 9 using 1:2 with linespoints lc 2 dt 3 pt 9 title "hessian-fisher fp16", \
     'sweep_plot.dat' index 10 using 1:2 with linespoints lc 3 dt 3 pt 9 title "hessian-fisher int8", \
     'sweep_plot.dat' index 11 using 1:2 with linespoints lc 4 dt 3 pt 9 title "hessian-fisher int4"
set output 'sweep_latency.png'
set title "batch-1 latency p50, one thread"
set ylabel "ms per image"
set yrange [0:*]
plot 'sweep_plot.dat' index 0 using 1:3 with linespoints lc 1 dt 1 pt 5 title "magnitude fp32", \
     'sweep_plot.dat' index 1 using 1:3 with linespoints lc 2 dt 1 pt 5 title "magnitude fp16", \
     'sweep_plot.dat' index 2 using 1:3 with linespoints lc 3 dt 1 pt 5 title "magnitude int8", \
     'sweep_plot.dat' index 3 using 1:3 with linespoints lc 4 dt 1 pt 5 title "magnitude int4", \
     'sweep_plot.dat' index 4 using 1:3 with linespoints lc 1 dt 2 pt 7 title "taylor fp32", \
     'sweep_plot.dat' index 5 using 1:3 with linespoints lc 2 dt 2 pt 7 title "taylor fp16", \
     'sweep_plot.dat' index 6 using 1:3 with linespoints lc 3 dt 2 pt 7 title "taylor int8", \
     'sweep_plot.dat' index 7 using 1:3 with linespoints lc 4 dt 2 pt 7 title "taylor int4", \
     'sweep_plot.dat' index 8 using 1:3 with linespoints lc 1 dt 3 pt 9 title "hessian-fisher fp32", \
     'sweep_plot.dat' index 9 using 1:3 with linespoints lc 2 dt 3 pt 9 title "hessian-fisher fp16", \
     'sweep_plot.dat' index 10 using 1:3 with linespoints lc 3 dt 3 pt 9 title "hessian-fisher int8", \
     'sweep_plot.dat' index 11 using 1:3 with linespoints lc 4 dt 3 pt 9 title "hessian-fisher int4"
set output 'sweep_memory.png'
set title "peak RSS of the inference process"
set ylabel "MiB"
plot 'sweep_plot.dat' index 0 using 1:4 with linespoints lc 1 dt 1 pt 5 title "magnitude fp32", \
     'sweep_plot.dat' index 1 using 1:4 with linespoints lc 2 dt 1 pt 5 title "magnitude fp16", \
     'sweep_plot.dat' index 2 using 1:4 with linespoints lc 3 dt 1 pt 5 title "magnitude int8", \
     'sweep_plot.dat' index 3 using 1:4 with linespoints lc 4 dt 1 pt 5 title "magnitude int4", \
     'sweep_plot.dat' index 4 using 1:4 with linespoints lc 1 dt 2 pt 7 title "taylor fp32", \
     'sweep_plot.dat' index 5 using 1:4 with linespoints lc 2 dt 2 pt 7 title "taylor fp16", \
     'sweep_plot.dat' index 6 using 1:4 with linespoints lc 3 dt 2 pt 7 title "taylor int8", \
     'sweep_plot.dat' index 7 using 1:4 with linespoints lc 4 dt 2 pt 7 title "taylor int4", \
     'sweep_plot.dat' index 8 using 1:4 with linespoints lc 1 dt 3 pt 9 title "hessian-fisher fp32", \
     'sweep_plot.dat' index 9 using 1:4 with linespoints lc 2 dt 3 pt 9 title "hessian-fisher fp16", \
     'sweep_plot.dat' index 10 using 1:4 with linespoints lc 3 dt 3 pt 9 title "hessian-fisher int8", \
     'sweep_plot.dat' index 11 using 1:4 with linespoints lc 4 dt 3 pt 9 title "hessian-fisher int4"
set output 'sweep_bytes.png'
set title "model file bytes"
set ylabel "KiB"
plot 'sweep_plot.dat' index 0 using 1:5 with linespoints lc 1 dt 1 pt 5 title "fp32", \
     'sweep_plot.dat' index 1 using 1:5 with linespoints lc 2 dt 1 pt 5 title "fp16", \
     'sweep_plot.dat' index 2 using 1:5 with linespoints lc 3 dt 1 pt 5 title "int8", \
     'sweep_plot.dat' index 3 using 1:5 with linespoints lc 4 dt 1 pt 5 title "int4"
