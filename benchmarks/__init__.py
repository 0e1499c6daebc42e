"""Efficiency measurements: ``python -m benchmarks.run`` (stage timings and memory per method ×
retention ratio), ``python -m benchmarks.compression_step`` (the compression step alone, against
a loop-based re-implementation of the authors' release) and ``python -m benchmarks.scoring_overhead``
(what the [CLS] score tap adds to the vision tower) and ``python -m benchmarks.convert_memory``
(peak memory of the checkpoint converter)."""
