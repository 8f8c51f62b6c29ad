module jobstream/bench/loadgen

go 1.19
