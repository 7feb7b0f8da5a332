"""Keyset page tokens are shared by every service (maas.common.paging)."""

from maas.common.paging import DEFAULT_PAGE, MAX_PAGE, decode, encode, fingerprint, page_size

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "decode", "encode", "fingerprint", "page_size"]
