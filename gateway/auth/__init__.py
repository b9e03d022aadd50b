"""Authentication for the gateway: hashed bearer tokens, browser sessions, CSRF, rate limits, IP blocks."""
