"""The HTTP half of the local cluster: Kubernetes REST API routes over the store."""
