"""The field technician's serial console (docs/console.md)."""
