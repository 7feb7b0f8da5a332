"""The maas inference service."""
