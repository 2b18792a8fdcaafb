#!/bin/sh
# Turns a lab VM into a stand-in for a Kubernetes ingress node: a small
# python3 server (uploaded by the Vagrantfile to /tmp/edgekit-backend.py)
# answering with the node's name on 30080 (HTTP) and 30443 (HTTPS), and an
# HTTPS /healthz on 6443 like an API server, under systemd.
# Usage: node.sh NAME ADDRESS
set -eu

name=${1:?usage: node.sh NAME ADDRESS}
address=${2:?usage: node.sh NAME ADDRESS}
libdir=/usr/local/lib/edgekit-lab
tlsdir=/etc/edgekit-lab

if ! command -v openssl >/dev/null 2>&1; then
    if ! { DEBIAN_FRONTEND=noninteractive apt-get -q update &&
        DEBIAN_FRONTEND=noninteractive apt-get -q -y install openssl; }; then
        echo "edgekit lab: openssl is missing and could not be installed; use a box that has it" >&2
        exit 1
    fi
fi

install -d -m 0755 "$libdir"
install -m 0755 /tmp/edgekit-backend.py "$libdir/backend.py"
rm -f /tmp/edgekit-backend.py

# Self-signed, made once: a re-provision must not change what clients pinned.
install -d -m 0750 "$tlsdir"
if [ ! -s "$tlsdir/tls.key" ] || [ ! -s "$tlsdir/tls.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
        -subj "/CN=$name" \
        -addext "subjectAltName=DNS:$name,IP:$address" \
        -keyout "$tlsdir/tls.key" -out "$tlsdir/tls.crt" 2>/dev/null
    chmod 0600 "$tlsdir/tls.key"
fi

cat >/etc/systemd/system/edgekit-backend.service <<UNIT
[Unit]
Description=edgekit lab backend (stand-in for a Kubernetes ingress node)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/python3 $libdir/backend.py --name $name --cert $tlsdir/tls.crt --key $tlsdir/tls.key
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
systemctl enable edgekit-backend.service >/dev/null 2>&1
systemctl restart edgekit-backend.service

# Fail the provision here, not later in a deploy, when the server does not come up.
for _ in $(seq 1 30); do
    if python3 "$libdir/backend.py" --probe 127.0.0.1; then
        echo "edgekit lab: $name answers on 30080, 30443 and 6443"
        exit 0
    fi
    sleep 1
done
echo "edgekit lab: $name's backend did not answer on 30080/30443/6443" >&2
journalctl -u edgekit-backend.service --no-pager -n 20 >&2 || true
exit 1
