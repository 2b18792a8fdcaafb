"""The local lab's pure parts: subnet choice, the plan, its inventory and state, the
image recipe and mirror (no root, no lab)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgekit.errors import InputError
from edgekit.image import default_recipe, load_recipe, mirror_from_sources
from edgekit.lab.plan import (
    LabInfo,
    check_subnet,
    choose_subnet,
    hosts_file_text,
    inventory_dict,
    known_hosts_text,
    plan_lab,
)

ROUTES = """\
default via 192.0.2.1 dev eth0
10.213.0.0/24 dev br-other proto kernel scope link src 10.213.0.1
10.213.1.0/25 dev wg0 scope link
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2
local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1
broadcast 192.0.2.255 dev eth0 table local proto kernel scope link src 192.0.2.2
"""


# --- unit: pure logic -----------------------------------------------------------


def test_subnet_choice_skips_candidates_that_overlap_a_route() -> None:
    # 10.213.0.0/24 is taken exactly, 10.213.1.0/24 partly (a /25 inside it).
    assert choose_subnet(ROUTES) == "10.213.2.0/24"


def test_subnet_choice_ignores_the_default_route() -> None:
    assert choose_subnet("default via 10.0.0.1 dev eth0\n") == "10.213.0.0/24"


def test_subnet_choice_fails_when_every_candidate_clashes() -> None:
    with pytest.raises(InputError, match="--subnet"):
        choose_subnet("10.0.0.0/8 dev eth0\n", candidates=("10.213.0.0/24", "10.99.0.0/24"))


@pytest.mark.parametrize(
    ("subnet", "why"),
    [
        ("10.213.0.0/24", "overlaps"),
        ("10.50.0.0/16", "/24"),
        ("8.8.8.0/24", "private"),
        ("10.213.5.7/24", "host bits"),
    ],
)
def test_given_subnet_is_refused_when_it_clashes_or_is_not_a_private_24(
    subnet: str, why: str
) -> None:
    with pytest.raises(InputError, match=why):
        check_subnet(subnet, ROUTES)


def lab_plan(tmp_path: Path, peers: int = 2, backends: int = 3) -> LabInfo:
    return plan_lab(tmp_path, "10.213.7.0/24", peers, backends)


def test_plan_gives_fixed_addresses_by_role(tmp_path: Path) -> None:
    lab = lab_plan(tmp_path, peers=3, backends=2)
    assert [(h.name, h.address) for h in lab.peers] == [
        ("proxy1", "10.213.7.11"), ("proxy2", "10.213.7.12"), ("proxy3", "10.213.7.13"),
    ]  # fmt: skip
    assert [(h.name, h.address) for h in lab.backends] == [
        ("node1", "10.213.7.21"), ("node2", "10.213.7.22"),
    ]  # fmt: skip
    assert (lab.gateway, lab.vip) == ("10.213.7.1", "10.213.7.100")
    # Kernel limit on interface names: 15 characters.
    assert all(len(h.veth) <= 15 and h.netns.startswith("edgekit-") for h in lab.hosts)


def test_plan_round_trips_through_its_state_record(tmp_path: Path) -> None:
    lab = lab_plan(tmp_path)
    assert LabInfo.from_dict(yaml.safe_load(yaml.safe_dump(lab.to_dict()))) == lab


def test_plan_refuses_more_peers_than_addresses(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--peers"):
        lab_plan(tmp_path, peers=11)


def test_lab_inventory_is_valid_for_the_inventory_loader(tmp_path: Path) -> None:
    from edgekit.inventory import load_inventory

    lab = lab_plan(tmp_path)
    for path in (lab.identity_file, lab.known_hosts):
        path.write_text("")
    lab.stats_password_file.write_text("Lab-Password-9fK2mQ7x\n")
    lab.stats_password_file.chmod(0o600)
    data = inventory_dict(lab)
    lab.inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    load_inventory(lab.inventory)  # raises with every problem listed
    assert data["vips"] == [{"address": "10.213.7.100/24", "vrid": 51}]
    assert data["vrrp"] == {"interface": "eth1"}
    assert [p["address"] for p in data["peers"]] == ["10.213.7.11", "10.213.7.12"]
    assert data["ssh"]["known_hosts"] == str(tmp_path / "known_hosts")
    assert {s["name"]: s["port"] for s in data["services"]} == {
        "http": 30080, "https": 30443, "kubernetes-api": 6443,
    }  # fmt: skip


def test_known_hosts_lists_each_address_with_its_own_key() -> None:
    text = known_hosts_text({
        "10.213.7.11": "ssh-ed25519 AAAAkey1 root@proxy1",
        "10.213.7.12": "ssh-ed25519 AAAAkey2 root@proxy2",
    })  # fmt: skip
    assert text == "10.213.7.11 ssh-ed25519 AAAAkey1\n10.213.7.12 ssh-ed25519 AAAAkey2\n"


def test_hosts_file_names_every_other_host_and_the_vip(tmp_path: Path) -> None:
    text = hosts_file_text(lab_plan(tmp_path), "proxy1")
    assert "127.0.1.1\tproxy1\n" in text
    assert "10.213.7.12\tproxy2\n" in text and "10.213.7.23\tnode3\n" in text
    assert "10.213.7.11" not in text


def test_mirror_comes_from_deb822_sources_skipping_security() -> None:
    sources = {
        "debian.sources": (
            "Types: deb\nURIs: http://security.example/debian-security\n"
            "Suites: bookworm-security\nComponents: main\n\n"
            "Types: deb deb-src\nURIs: http://mirror.example/debian/\n"
            "Suites: bookworm bookworm-updates\nComponents: main\n"
        ),
    }
    assert mirror_from_sources(sources) == "http://mirror.example/debian"


def test_mirror_comes_from_one_line_sources() -> None:
    sources = {
        "sources.list": (
            "# deb http://commented.example/debian bookworm main\n"
            "deb [arch=amd64] http://line.example/debian bookworm main\n"
        )
    }
    assert mirror_from_sources(sources) == "http://line.example/debian"
    assert mirror_from_sources({}) is None


def test_shipped_recipe_is_valid_and_keyed_by_its_content(tmp_path: Path) -> None:
    recipe_path = default_recipe()
    recipe, digest = load_recipe(recipe_path)
    assert recipe.suite == "bookworm" and recipe.variant == "minbase"
    needed = {"systemd", "systemd-sysv", "dbus", "openssh-server", "haproxy", "keepalived",
              "iproute2", "nftables", "python3", "sudo"}  # fmt: skip
    assert needed <= set(recipe.packages)
    assert recipe.admin.user == "edgekit" and recipe.admin.passwordless_sudo
    assert recipe.sshd["PermitRootLogin"] == "no"
    assert recipe.sshd["PasswordAuthentication"] == "no"
    changed = tmp_path / "r.yaml"
    changed.write_text(recipe_path.read_text() + "\n# changed\n")
    assert load_recipe(recipe_path)[1] == digest != load_recipe(changed)[1]


def test_recipe_error_names_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsuite: bookworm\npackages: [a]\nadmin: {user: Root}\n")
    with pytest.raises(InputError, match=r"bad\.yaml: admin\.user"):
        load_recipe(bad)
