"""The command line (`cabguard`) and the subcommands that are tools rather than services."""
