"""What memguard tells the world: the Report, the bus (one bounded queue per
sink), the log, metrics and collect sinks, and the /healthz /readyz /metrics
endpoint."""
