"""The maas trainer service."""
