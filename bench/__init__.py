"""Benchmark suite for Jobstream: SSE load against Jobstream and its peers.

Run ``python -m bench`` (see docs/benchmarks.md).
"""
