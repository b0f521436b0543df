"""Operating a node: Prometheus metrics and the cluster page."""
