"""objects stage."""
