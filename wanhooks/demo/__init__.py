"""The demo: wanhooks on a simulated multi-WAN host, in network namespaces made for the run.

    python -m wanhooks.demo [--short] [--png FILE | --no-png]

Nothing on the host's own network changes; Ctrl-C at any point removes
every namespace, process and file the demo made.  story.py tells it,
watch.py records it, view.py shows it live, chart.py draws it.
"""

from .story import main

__all__ = ["main"]
