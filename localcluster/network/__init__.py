"""Pod networking: network namespaces (process runtime) and Docker networks/firewall (docker runtime)."""
