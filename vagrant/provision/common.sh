#!/bin/sh
# Provisioning shared by every lab VM (proxies and nodes).
# Usage: common.sh isolated|connected
#
# Proxies are otherwise left plain on purpose: making them proxies is
# `edgekit deploy`'s job, and the lab exists to exercise it.
set -eu

mode=${1:-connected}

# In isolated mode the lab must have no way out: no default route now, and
# none after a DHCP renewal on the management interface either.
if [ "$mode" = isolated ]; then
    hook=/etc/dhcp/dhclient-enter-hooks.d/edgekit-no-default-route
    if [ -d /etc/dhcp/dhclient-enter-hooks.d ]; then
        # dhclient-script sources enter hooks; unsetting new_routers stops it
        # from installing a gateway.
        printf '%s\n' '# edgekit lab (isolated): never take a default route from DHCP' \
            'unset new_routers' >"$hook"
        chmod 0644 "$hook"
    fi
    while ip -4 route show default | grep -q .; do
        ip -4 route del default
    done
    while ip -6 route show default | grep -q .; do
        ip -6 route del default
    done
    # Disable IPv6 router advertisements on every interface, for the same reason.
    printf 'net.ipv6.conf.all.accept_ra = 0\nnet.ipv6.conf.default.accept_ra = 0\n' \
        >/etc/sysctl.d/60-edgekit-lab-isolated.conf
    sysctl -q -p /etc/sysctl.d/60-edgekit-lab-isolated.conf
fi

# edgekit's own checks and the nodes' web server use python3.
if ! command -v python3 >/dev/null 2>&1; then
    if [ "$mode" = isolated ]; then
        echo "edgekit lab: python3 is missing and isolated mode cannot install it; use a box that has python3" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -q update
    DEBIAN_FRONTEND=noninteractive apt-get -q -y install python3
fi
