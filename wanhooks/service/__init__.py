"""wanhooks as a systemd service: the daemon's loop, its control socket and client,
locks, sd_notify, the admin's transition hooks, and its background tasks."""
