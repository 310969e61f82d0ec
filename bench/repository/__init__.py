"""Repository micro-benchmarks: data pipeline throughput and index lookup memory."""
