"""kefu's benchmark: throughput, latency and memory of the pipeline against same-run baselines."""
