"""What each link's probes and counters say: the health state machine, the probers,
the passive watch for unanswered traffic, and the capacity estimate behind weight: auto."""
