"""The fake world: simulated Modbus devices on pseudo-terminals, scenarios,
virtual time and closed-loop evaluation."""
