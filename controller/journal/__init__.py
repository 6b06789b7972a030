"""The evidence journal: records, segment files, the journal writer, evidence windows, verification (docs/journal.md)."""
