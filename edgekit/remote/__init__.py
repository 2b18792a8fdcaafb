"""Transports to the hosts: the seam (base), SSH through fabric (ssh), a scripted fake."""

from edgekit.remote.base import CommandError, Held, HostError, Hosts, Result, Transport

__all__ = ["CommandError", "Held", "HostError", "Hosts", "Result", "Transport"]
