"""Model migrations: control events in; shadow bootstrap, catch-up, gate at equal offsets, flip."""
