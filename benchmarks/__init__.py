"""medpipe benchmarks: measured comparisons (not tests). See benchmarks/README.md."""
