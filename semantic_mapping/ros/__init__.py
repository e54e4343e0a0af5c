"""ros stage."""
