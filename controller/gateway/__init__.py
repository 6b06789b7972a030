"""The running gateway: the scan loop, the site it is built from, its outputs and files (docs/runtime.md)."""
