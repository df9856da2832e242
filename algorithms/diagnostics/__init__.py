"""`diagnostics`: checks, from inside an algorithm pod, that the node set it up as promised and
that network isolation holds. Writes a report `[{name, ok, detail}]`; see README.md."""
