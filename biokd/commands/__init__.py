"""CLI command functions, one module per area; heavy imports happen inside the functions."""
