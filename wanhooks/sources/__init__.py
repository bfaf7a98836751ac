"""Event sources: each turns something it hears into events.Event and posts it."""
