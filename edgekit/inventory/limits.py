"""Every bound the inventory model enforces, in one place (README's "Limits" lists them)."""

from __future__ import annotations

# Reading the file.
MAX_FILE_BYTES = 10 * 1024 * 1024
# Nesting: edge.yaml needs 5 levels; deeper is a mistake or an attack on the parser.
MAX_DEPTH = 32
# Values (every key, scalar, list and mapping), after YAML aliases are expanded: 5,000
# servers are about 35,000. More is an alias bomb (a few KB that expand to billions of
# values) or not an inventory; either would take haproxy -c and pydantic a long time.
MAX_VALUES = 200_000
# A plain number longer than this is not any value edgekit takes (and Python refuses
# to read integers of more than 4,300 digits).
MAX_NUMBER_CHARS = 20

# render.py gives peers priorities 150, 140, ... 10; keepalived needs 1..254.
MAX_PEERS = 15
# A VRRP segment is one broadcast domain: wider than a /8 is a typo (/0, /1 ...) that
# would also make the firewall's default admin set (the VIPs' subnets) the Internet.
MIN_VIP_PREFIX = 8
# Wider than this, the default admin CIDRs (the VIPs' subnets) reach far beyond the
# peers: a warning.
WARN_VIP_PREFIX = 24

# haproxy keeps timers in milliseconds in a signed 32-bit integer.
MAX_DURATION_MS = 2_147_483_647
MIN_DURATION_MS = 1

# Linux's default fs.nr_open: the most files one process can open. haproxy needs two
# per connection plus its listeners, checks and logs.
NR_OPEN = 1_048_576
NOFILE_RESERVE = 1_000
MAX_MAXCONN = 500_000  # 1,000,000 files, and room for thousands of servers' checks

# Interface names: the kernel's IFNAMSIZ (16) less the terminating NUL.
MAX_IFNAME = 15
# haproxy's own limits for one configuration line.
MAX_OPTION_CHARS = 2000
MAX_OPTION_WORDS = 63
# VRRPv2 PASS authentication carries 8 bytes.
MAX_AUTH_PASS = 8
MIN_PASSWORD_LENGTH = 8
