"""The smallest site config that checks: one bus, one I/O module, keys and journal paths."""

MINIMAL_SITE = """
[gateway]
id = "gw1"
site = "s"
timezone = "UTC"
[[bus]]
name = "a"
port = "/dev/null"
[[device]]
name = "io"
bus = "a"
profile = "io-dvt"
address = 1
[keys]
record = "r.key"
[journal]
dir = "j"
"""
