"""Runtime shared by the maas services; none of them imports another's code."""
