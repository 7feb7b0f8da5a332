"""Typed clients of the maas services, used service-to-service and by the CLI."""
