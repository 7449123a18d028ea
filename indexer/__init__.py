"""Chunk, embed and index documents; search them; snapshot and reload the index."""
