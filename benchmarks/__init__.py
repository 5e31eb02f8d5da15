"""embplan's benchmarks (pytest-benchmark suites and ``python -m benchmarks.compare``); see docs/performance.md."""
