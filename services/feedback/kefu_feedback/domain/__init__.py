"""Domain model: plain Python, no transport or storage."""
