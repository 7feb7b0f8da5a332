"""The `maas` command line."""
