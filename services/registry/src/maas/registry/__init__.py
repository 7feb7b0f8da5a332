"""The maas model registry service."""
