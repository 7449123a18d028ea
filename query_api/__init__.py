"""The thin HTTP lookup API that serves whichever index the Redis pointer names."""
