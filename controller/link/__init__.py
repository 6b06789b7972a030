"""The link to the head end: the wire contract, the uplink (records out) and the downlink (signed commands in) (docs/uplink.md)."""
