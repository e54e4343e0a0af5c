"""completion stage."""
