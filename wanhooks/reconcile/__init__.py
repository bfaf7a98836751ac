"""The difference between what plan() wants and what the kernel holds, written in a
safe order; one whole round (round.converge) for both `apply` and the daemon."""
