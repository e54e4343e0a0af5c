"""splatting stage."""
