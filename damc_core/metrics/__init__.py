"""Image and video quality metrics."""
