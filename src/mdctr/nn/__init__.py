"""Building blocks every model shares."""
