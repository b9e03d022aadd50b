"""Programs that run inside the WASM cell (read as resources by the host, never imported there)."""
