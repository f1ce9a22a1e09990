"""The trio runtime: nodes, clusters, events and statistics (private; see `hakit`)."""
