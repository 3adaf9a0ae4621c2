"""Security plumbing: passwords, signing keys and tokens, SMART scopes, the request principal."""
