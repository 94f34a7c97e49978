"""`shoal bench`: throughput measurements anyone can run."""
