"""End-to-end jobs behind the CLI: training runs, demos."""
