"""Transports to the hosts: the seam (base), SSH through fabric (ssh), a scripted fake."""

from edgekit.remote.base import CommandError, HostError, Hosts, Result, Transport

__all__ = ["CommandError", "HostError", "Hosts", "Result", "Transport"]
