"""Benchmarks of the node and the proxy on the local cluster (`python -m benchmarks`)."""
