"""wanhooks: use every WAN link at once, with weighted multipath routing and per-link policy routing."""

__version__ = "0.2.0"  # the one place the version is written (pyproject reads it)
