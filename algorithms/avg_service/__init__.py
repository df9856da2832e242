"""The mean of a column, asked of the task's companion query service (CONTRACTS §10) instead of
read from the database: the example algorithm next to ``algorithms.query_service``."""
