"""Example simulator configs (SIM.toml, docs/simulator.md); a package so installs carry them."""
