"""What wanhooks tells people: status, Prometheus metrics, the journal, log lines,
and each link's share of the traffic."""
