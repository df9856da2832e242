"""Helpers for algorithm authors: the container env (CONTRACTS §5), input/output files, the server
client (through the node's proxy, with the container token) and progress reporting.

Standard library only, so algorithm images need nothing beyond a slim Python base.
"""
