"""A small read-only HTTP query service over one node database: the example companion service
(CONTRACTS §10). Run as a task's ``service`` next to ``algorithms.avg_service``."""
