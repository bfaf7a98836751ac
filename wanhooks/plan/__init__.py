"""What the kernel should hold, decided from the config and what is observed (pure):
planner.plan() and the parts it uses."""
