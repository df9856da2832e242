"""The kubelet: runs the pods bound to this node (containers, probes, volumes, logs, status)."""
