"""Developer tools: benchmarks, the MicroPython runner and the sample traces."""
