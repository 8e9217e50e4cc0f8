"""Fixtures that build a tiny random SAM 3 in the real facebook/sam3 folder layout."""
