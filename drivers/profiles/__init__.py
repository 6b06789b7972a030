"""Shipped device profiles (TOML data, docs/profiles.md); a package so installs carry them."""
