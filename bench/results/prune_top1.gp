# Top-1 of the shipped model against the pruning ratio (README, Pruning). Data: top-1 before and
# after 1 epoch of fine-tuning, from `vitc prune ... --json`. Run in this folder: gnuplot prune_top1.gp
set terminal pngcairo size 720,440 font ",10"
set output 'prune_top1.png'
set title "Fashion-MNIST ViT (90.53% fp32): uniform pruning of heads + MLP units"
set xlabel "pruning ratio (% of heads and of MLP units per block)"
set ylabel "top-1 (%)"
set key bottom left
set grid
set yrange [60:92]
set xrange [0:65]
base = 90.53
plot base with lines dt 2 lc rgb "black" title "unpruned (90.53)", \
     'prune_top1.dat' index 0 using 1:3 with linespoints pt 7 lc 1 title "magnitude (L2), fine-tuned 1 ep", \
     '' index 1 using 1:3 with linespoints pt 5 lc 2 title "Taylor, fine-tuned 1 ep", \
     '' index 2 using 1:3 with linespoints pt 9 lc 3 title "Hessian (Fisher), fine-tuned 1 ep", \
     '' index 0 using 1:2 with linespoints pt 6 dt 3 lc 1 title "magnitude, no fine-tune", \
     '' index 1 using 1:2 with linespoints pt 4 dt 3 lc 2 title "Taylor, no fine-tune", \
     '' index 2 using 1:2 with linespoints pt 8 dt 3 lc 3 title "Hessian (Fisher), no fine-tune"
