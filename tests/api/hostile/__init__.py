"""The hostile suite: what an attacker or a careless caller tries against a real `citadel api` over HTTP."""
