"""The inquiry domain: plain Python, no transport and no storage."""
