"""edgekit: a highly available haproxy + keepalived edge for bare-metal Kubernetes."""

__version__ = "0.1.0"
