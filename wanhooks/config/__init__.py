"""The YAML (and 2011 column) configuration: loading with located errors, and its schema."""
