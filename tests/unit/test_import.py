"""`edgekit import`: real-world haproxy.cfg shapes (tests/data/haproxy/*.cfg) into an
edge.yaml that edgekit's own loader accepts, with the notes and "not imported" lines a
user needs, and broken input refused in one line."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgekit import binaries, render
from edgekit.errors import InputError
from edgekit.inventory import Inventory, load_inventory
from edgekit.inventory.haproxy_cfg import endpoint, parse_config
from edgekit.inventory.importer import equivalence, import_config
from edgekit.inventory.load import InventoryError
from tests.cli import Result, one_line_error, run
from tests.conftest import need_program

DATA = Path(__file__).resolve().parents[1] / "data" / "haproxy"
PEERS = "proxy1=10.10.0.11,proxy2=10.10.0.12"
VIP = "10.10.0.100/24"
STRONG = "Zq8-vLm3pRt7xW"
NOT_IMPORTED = re.compile(r"^edgekit: not imported: .+?:(\d+): (.+)$")


@pytest.fixture(autouse=True)
def _stats_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_STATS_PASSWORD", STRONG)
    monkeypatch.delenv("EDGEKIT_DEBUG", raising=False)


@dataclass(frozen=True)
class Imported:
    result: Result
    inv: Inventory
    text: str  # the written edge.yaml

    def not_imported(self) -> dict[int, str]:
        found = (NOT_IMPORTED.match(ln) for ln in self.result.stderr.splitlines())
        return {int(m.group(1)): m.group(2) for m in found if m}

    def notes(self, fragment: str) -> list[str]:
        return [ln for ln in self.result.stderr.splitlines() if fragment in ln]

    def servers(self, backend: str) -> list[dict[str, object]]:
        return [s.model_dump(exclude_defaults=True) for s in self.inv.backends[backend]]


def imported(
    tmp_path: Path, fixture: str, *flags: str, peers: str = PEERS, vip: str | None = VIP
) -> Imported:
    """Import a fixture and load the written file with edgekit's own loader."""
    out = tmp_path / "edge.yaml"
    args = ["import", str(DATA / fixture), "-o", str(out), "--peers", peers]
    result = run(*args, *(["--vip", vip] if vip else []), *flags)
    assert result.exit_code == 0, result.stderr
    return Imported(result, load_inventory(out).inventory, out.read_text())


def test_listen_sections_become_one_service_each_with_their_servers(tmp_path: Path) -> None:
    got = imported(tmp_path, "listen-sections.cfg")
    services = [(s.name, s.listen, s.backend, s.port, s.timeout) for s in got.inv.services]
    assert services == [
        ("http", 80, "http", 30080, None),
        ("https", 443, "https", 30443, None),
        ("kubernetes-api", 6443, "kubernetes-api", 6443, "1h"),
    ]
    assert got.servers("kubernetes-api") == [
        {"name": "cp1", "address": "10.10.0.21"},
        {"name": "cp2", "address": "10.10.0.22"},
    ]
    assert (got.inv.haproxy.connect_timeout, got.inv.haproxy.client_timeout) == ("5s", "1m")
    assert got.not_imported() == {}
    assert got.notes("equivalence: every listen port and server")


def test_frontend_and_default_backend_pairs_map_to_services(tmp_path: Path) -> None:
    got = imported(tmp_path, "frontend-backend.cfg")
    assert [(s.name, s.listen, s.backend, s.balance) for s in got.inv.services] == [
        ("ingress-http", 80, "nodes-http", "roundrobin"),
        ("ingress-https", 443, "nodes-https", "source"),
    ]
    assert got.inv.haproxy.maxconn == 4000
    assert got.inv.haproxy.connect_timeout == "10s"


def test_a_use_backend_with_a_condition_is_not_imported_with_its_line(tmp_path: Path) -> None:
    got = imported(tmp_path, "use-backend.cfg")
    assert [(s.name, s.backend) for s in got.inv.services] == [("tls", "ingress")]
    skipped = got.not_imported()
    assert "use_backend api if" in skipped[11] and "one frontend to one backend" in skipped[11]
    assert {9, 10} <= set(skipped)  # the tcp-request lines of the frontend
    # The equivalence check names the server only the use_backend reached.
    assert got.notes("servers missing from the new haproxy.cfg: 10.10.0.21:6443")


def test_comments_quotes_and_odd_indentation_are_read_as_haproxy_reads_them(
    tmp_path: Path,
) -> None:
    got = imported(tmp_path, "comments-indentation.cfg")
    [svc] = got.inv.services
    assert (svc.name, svc.listen, svc.backend, svc.port) == ("web-front", 80, "web-pool", 8080)
    assert [s["name"] for s in got.servers("web-pool")] == ["web-1", "web-2", "web-3"]
    assert got.inv.haproxy.connect_timeout == "5s"  # quoted in the file
    assert got.inv.haproxy.maxconn == 2000
    assert got.notes("'Web_Front' is named web-front")
    assert got.not_imported() == {}


def test_defaults_timeouts_map_to_edgekits_keys_with_units(tmp_path: Path) -> None:
    got = imported(tmp_path, "defaults-timeouts.cfg")
    h = got.inv.haproxy
    # A bare number is milliseconds to haproxy: written with the unit.
    assert (h.connect_timeout, h.client_timeout, h.server_timeout) == ("5000ms", "50000ms", "2m")
    assert "(a bare number: milliseconds)" in got.text
    assert got.inv.services[0].timeout == "1h"  # the defaults' tunnel timeout


def test_an_http_mode_frontend_keeps_ports_and_servers_and_warns(tmp_path: Path) -> None:
    got = imported(tmp_path, "http-mode.cfg")
    [svc] = got.inv.services
    assert (svc.listen, svc.port, svc.balance) == (80, 8080, "leastconn")
    assert (svc.health.type, svc.health.path, svc.health.expect_status) == ("http", "/health", 204)
    [warning] = got.notes("edgekit: warning: ")
    assert "http-mode.cfg:9: frontend web is mode http" in warning
    skipped = got.not_imported()
    assert all("HTTP mode only" in skipped[n] for n in (3, 4, 11, 19))


def test_kubeadms_api_recipe_keeps_its_https_health_check(tmp_path: Path) -> None:
    got = imported(tmp_path, "kubeadm-api.cfg")
    [svc] = got.inv.services
    assert (svc.name, svc.listen, svc.port) == ("apiserver", 6443, 6443)
    assert svc.health.model_dump() == {
        "type": "https",
        "path": "/healthz",
        "expect_status": 200,
        "host": None,
    }
    assert len(got.inv.backends["apiserverbackend"]) == 3
    # HTTP-only defaults touched no TCP proxy: a note, not "not imported".
    assert got.notes("kubeadm-api.cfg:13: 'option http-server-close': HTTP mode only")
    assert set(got.not_imported()) == {16, 18, 23}  # retries, timeout queue, timeout check


def test_stats_with_default_credentials_warns_loudly_and_never_copies_them(
    tmp_path: Path,
) -> None:
    got = imported(tmp_path, "stats-default-credentials.cfg")
    [warning] = got.notes("edgekit: warning: ")  # one loud line
    assert "the old stats page's password is a well-known default" in warning
    assert "stats-default-credentials.cfg:17:" in warning and "(admin:admin)" in warning
    stats = got.inv.stats
    assert (stats.port, stats.uri, stats.user) == (9000, "/haproxy?stats", "admin")
    assert stats.password_env == "EDGEKIT_STATS_PASSWORD"
    assert "admin:admin" not in got.text and "password:" not in got.text


def test_a_strong_stats_password_is_not_copied_either(tmp_path: Path) -> None:
    got = imported(tmp_path, "stats-own-password.cfg")
    assert "Vq83kLxP0z2w" not in got.text
    assert (got.inv.stats.user, got.inv.stats.port) == ("admin", 8404)  # no old user either
    assert got.notes("stats-own-password.cfg:6: the old stats password is not copied")
    assert not got.notes("edgekit: warning: ")


def test_servers_without_check_get_health_checks_and_a_line_says_which(tmp_path: Path) -> None:
    got = imported(tmp_path, "servers-without-check.cfg")
    [line] = got.notes("servers without `check` now get health checks")
    assert "(tcp, every 2s): node1 (line 6), node3 (line 8)" in line
    assert "node2" not in line


def test_backup_servers_stay_backup(tmp_path: Path) -> None:
    got = imported(tmp_path, "backup-servers.cfg", "--strict")
    assert [(s["name"], s.get("backup", False)) for s in got.servers("api")] == [
        ("cp1", False),
        ("cp2", False),
        ("standby", True),
    ]


def test_weights_map_to_servers_zero_included(tmp_path: Path) -> None:
    got = imported(tmp_path, "weights.cfg")
    assert [s.weight for s in got.inv.backends["http"]] == [200, 50, 0]
    assert got.inv.services[0].balance == "leastconn"


def test_an_ssl_bind_is_imported_as_tcp_and_the_tls_termination_is_not(tmp_path: Path) -> None:
    got = imported(tmp_path, "ssl-bind.cfg")
    assert [(s.listen, s.port) for s in got.inv.services] == [(443, 8080)]
    assert "haproxy terminated TLS here" in got.not_imported()[2]
    assert "crt" not in got.text


def test_every_bind_port_becomes_a_service_on_the_same_backend(tmp_path: Path) -> None:
    got = imported(tmp_path, "multiple-binds.cfg")
    assert [(s.name, s.listen, s.backend) for s in got.inv.services] == [
        ("web", 80, "nodes"),
        ("web-8080", 8080, "nodes"),
        ("web-8081", 8081, "nodes"),
        ("web-8082", 8082, "nodes"),
    ]


def test_the_one_address_the_services_bind_becomes_the_vip_with_a_24_prefix(
    tmp_path: Path,
) -> None:
    got = imported(
        tmp_path, "specific-address.cfg", peers="proxy1=10.20.0.11,proxy2=10.20.0.12", vip=None
    )
    assert str(got.inv.vips[0].address) == "10.20.0.50/24"
    assert got.notes("with the prefix /24 assumed")


def test_no_vip_is_guessed_when_not_every_service_binds_that_address() -> None:
    text = "listen a\n bind 10.20.0.50:80\n server s 10.20.0.31:80\n"
    text += "listen b\n bind *:443\n server s 10.20.0.31:443\n"
    result = import_config(text, "t.cfg")
    assert result.data["vips"][0]["address"] == "REPLACE-ME"
    assert any("do not all bind one address" in n.message for n in result.notes)


def test_a_port_bound_twice_is_imported_once_and_the_stats_page_moves_off_it() -> None:
    text = "frontend a\n bind 10.20.0.50:8404\n default_backend b\n"
    text += "frontend c\n bind 10.20.0.51:8404\n default_backend b\n"
    text += "backend b\n server s 10.20.0.31:80\n server S 10.20.0.32:80\n"
    result = import_config(text, "t.cfg")
    assert [(s["name"], s["listen"]) for s in result.data["services"]] == [("a", 8404)]
    assert "port 8404 is imported already (line 2)" in result.not_imported[0].message
    assert result.data["stats"]["port"] == 8405
    # Server names that meet once lowercased stay apart; the backend is read once.
    assert [s["name"] for s in result.data["backends"]["b"]] == ["s", "s-2"]
    assert len([n for n in result.notes if "without `check`" in n.message]) == 1


def test_an_old_style_listen_line_binds_and_its_stats_lines_are_not_imported(
    tmp_path: Path,
) -> None:
    got = imported(tmp_path, "old-style-listen.cfg")
    assert [(s.name, s.listen, s.port) for s in got.inv.services] == [("webfarm", 80, 80)]
    assert [s["name"] for s in got.servers("webfarm")] == ["web1", "web2"]
    skipped = got.not_imported()
    assert all("a stats page on a service" in skipped[n] for n in (4, 5))
    [warning] = got.notes("edgekit: warning: ")
    assert "old-style-listen.cfg:5: the old stats page's password is a well-known" in warning
    assert "password was a well-known default" in got.text  # said in edge.yaml too
    assert "haproxy:haproxy" not in got.text


def test_check_ssl_without_an_http_check_says_the_tcp_check_has_no_tls() -> None:
    text = "listen api\n bind :6443\n server c1 10.10.0.21:6443 check check-ssl verify none\n"
    result = import_config(text, "k0s.cfg")
    assert "health" not in result.data["services"][0]
    [note] = [n for n in result.notes if "check-ssl" in n.message]
    assert note.line == 1 and "connects without TLS" in note.message
    assert result.not_imported == []


def test_an_http_check_edgekit_refuses_is_not_imported_in_one_line() -> None:
    text = "listen web\n bind :80\n option httpchk\n http-check send meth GET uri healthz\n"
    result = import_config(text + " server w 10.10.0.51:80 check\n", "t.cfg")
    assert "health" not in result.data["services"][0]
    [skipped] = result.not_imported
    assert skipped.line == 1 and "its HTTP check (path: " in skipped.message
    assert "\n" not in skipped.message


def test_backend_lines_go_to_haproxy_options_with_their_source_line(tmp_path: Path) -> None:
    got = imported(tmp_path, "backend-options.cfg")
    [svc] = got.inv.services
    assert svc.haproxy_options == [
        "option tcp-check",
        "tcp-check connect",
        "timeout queue 30s",
        "retries 2",
    ]
    assert re.search(r'- "option tcp-check"\s+# \S+backend-options\.cfg:7$', got.text, re.M)
    assert (svc.check.inter, svc.check.fall, svc.check.rise) == ("3s", 2, 4)  # default-server
    assert svc.proxy_protocol == "v2"
    skipped = got.not_imported()
    # edgekit's own validation refuses a line that reads a file of the proxy's disk.
    assert "refuses it in haproxy_options" in skipped[11] and "errorfile" in skipped[11]
    assert "maxconn 500" in skipped[12]


def test_servers_without_a_port_take_the_listen_port(tmp_path: Path) -> None:
    got = imported(tmp_path, "portless-servers.cfg")
    assert got.inv.services[0].port == 80
    assert all(s.port is None for s in got.inv.backends["web"])
    assert got.notes("equivalence: every listen port and server")


def test_unused_backends_and_other_sections_are_not_imported(tmp_path: Path) -> None:
    got = imported(tmp_path, "unused-sections.cfg")
    skipped = got.not_imported()
    assert "userlist" in skipped[1] and "peers" in skipped[4] and "forgotten" in skipped[14]
    assert "secret" not in got.text
    assert got.notes("servers missing from the new haproxy.cfg: 10.10.0.99:80")


def test_the_imported_config_passes_haproxy_c(tmp_path: Path) -> None:
    need_program("haproxy")
    got = imported(tmp_path, "backend-options.cfg")
    loaded = load_inventory(tmp_path / "edge.yaml")
    files = render.render_all(loaded)["proxy1"]
    check = binaries.haproxy_check("proxy1", files)
    assert check is not None and check.ok, check
    assert got.inv.services[0].haproxy_options


def test_without_peers_or_vip_placeholders_keep_the_output_from_validating(
    tmp_path: Path,
) -> None:
    out = tmp_path / "edge.yaml"
    result = run("import", str(DATA / "listen-sections.cfg"), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert "address: REPLACE-ME   # REPLACE-ME" in out.read_text()
    assert "does not validate until they are filled" in result.stderr
    assert "equivalence not checked" in result.stderr
    with pytest.raises(InventoryError):
        load_inventory(out)


def test_strict_exits_2_and_writes_nothing_when_a_line_is_not_imported(tmp_path: Path) -> None:
    out = tmp_path / "edge.yaml"
    args = ["import", str(DATA / "use-backend.cfg"), "-o", str(out), "--peers", PEERS]
    result = run(*args, "--vip", VIP, "--strict")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    # The lines that were not imported, then one error line.
    assert [ln.split(":", 2)[1] for ln in lines].count(" not imported") == 3
    errors = [ln for ln in lines if not ln.startswith(("edgekit: note:", "edgekit: warning:"))]
    assert errors[-1].endswith(
        "use-backend.cfg: 3 line(s) not imported (--strict); nothing written"
    )
    assert len([ln for ln in errors if "not imported:" not in ln]) == 1
    assert not out.exists()


def test_json_lists_notes_not_imported_lines_and_the_equivalence(tmp_path: Path) -> None:
    out = tmp_path / "edge.yaml"
    args = ["import", str(DATA / "use-backend.cfg"), "-o", str(out), "--peers", PEERS]
    result = run(*args, "--vip", VIP, "--json")
    data = json.loads(result.stdout)
    assert (data["ok"], data["inventory"]) == (True, str(out))
    assert [n["line"] for n in data["not_imported"]] == [9, 10, 11]
    assert data["equivalence"]["missing_in_new"] == {
        "listen_ports": [],
        "servers": ["10.10.0.21:6443"],
    }
    assert all(set(n) == {"line", "message"} for n in data["notes"])


def test_refuses_to_overwrite_the_output_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "edge.yaml"
    out.write_text("mine\n")
    args = ["import", str(DATA / "weights.cfg"), "-o", str(out), "--peers", PEERS, "--vip", VIP]
    refused = run(*args)
    assert refused.exit_code == 2
    assert one_line_error(refused).endswith(
        "edge.yaml: already exists; not overwriting (hint: choose another path, remove it, "
        "or add --force)"
    )
    assert out.read_text() == "mine\n"
    assert run(*args, "--force").exit_code == 0
    assert load_inventory(out).inventory.services[0].listen == 80


def test_output_into_a_directory_writes_edge_yaml_there_and_a_missing_one_is_refused(
    tmp_path: Path,
) -> None:
    cfg = str(DATA / "weights.cfg")
    assert run("import", cfg, "-o", str(tmp_path)).exit_code == 0
    assert (tmp_path / "edge.yaml").is_file()
    missing = run("import", cfg, "-o", f"{tmp_path}/nowhere/")
    assert missing.exit_code == 2
    assert "nowhere/: the directory" in one_line_error(missing)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("name", "content", "expect"),
    [
        ("missing.cfg", None, "missing.cfg: no such file"),
        ("binary.cfg", b"\x7fELF\x00\x01", "binary.cfg: a binary file"),
        ("latin1.cfg", b"global\n  daemon\n# caf\xe9\n", "latin1.cfg:3: not UTF-8"),
        ("empty.cfg", b"", "empty.cfg: empty"),
        ("comments.cfg", b"# nothing\n   # here\n", "comments.cfg: empty"),
        ("outside.cfg", b"bind *:80\nlisten x\n", "outside.cfg:1: 'bind' outside any section"),
        ("quote.cfg", b'listen x\n  bind "*:80\n', "quote.cfg:2: a quote is not closed"),
    ],
)
def test_broken_input_exits_2_with_one_line_naming_the_file(
    tmp_path: Path, name: str, content: bytes | None, expect: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = run("import", str(path), "-o", str(tmp_path / "edge.yaml"))
    assert result.exit_code == 2
    assert expect in one_line_error(result)
    assert not (tmp_path / "edge.yaml").exists()


def test_a_directory_or_a_file_without_frontends_exits_2(tmp_path: Path) -> None:
    directory = run("import", str(tmp_path), "-o", str(tmp_path / "edge.yaml"))
    assert "a directory, not a haproxy.cfg" in one_line_error(directory)
    only = run("import", str(DATA / "global-defaults-only.cfg"), "-o", str(tmp_path / "e.yaml"))
    assert only.exit_code == 2
    assert "no frontend or listen section" in one_line_error(only)


def test_a_vip_without_its_prefix_is_refused(tmp_path: Path) -> None:
    args = ["import", str(DATA / "weights.cfg"), "-o", str(tmp_path / "edge.yaml")]
    result = run(*args, "--vip", "10.10.0.100")
    assert result.exit_code == 2
    assert "--vip: '10.10.0.100' is not an IPv4 address with its prefix" in one_line_error(result)


@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        ("*:80", ("*", 80)),
        (":80", ("", 80)),
        ("10.0.0.5:443", ("10.0.0.5", 443)),
        ("[::]:6443", ("::", 6443)),
        (":::8080", ("::", 8080)),
        ("ipv4@10.0.0.5:80", ("10.0.0.5", 80)),
        (":8000-8010", None),
        ("/run/haproxy.sock", None),
        ("10.0.0.5", None),
    ],
)
def test_bind_and_server_endpoints_are_read_like_haproxy(
    spec: str, expect: tuple[str, int] | None
) -> None:
    assert endpoint(spec) == expect


def test_a_hash_inside_quotes_is_no_comment_and_indentation_does_not_matter() -> None:
    sections = parse_config('listen a\nbind :80\n  acl x hdr(x) -m str "a#b" # c\n', "t.cfg")
    assert sections[0].lines[-1].words == ["acl", "x", "hdr(x)", "-m", "str", "a#b"]


def test_equivalence_compares_the_rendered_config_with_the_old_one() -> None:
    text = (DATA / "use-backend.cfg").read_text()
    result = import_config(
        text,
        "use-backend.cfg",
        peers=[{"name": "a", "address": "10.10.0.11"}, {"name": "b", "address": "10.10.0.12"}],
        vip=VIP,
    )
    eq = equivalence(result, "use-backend.cfg")
    assert eq["checked"] and not eq["equivalent"]
    assert eq["only_in_new"] == {"listen_ports": [], "servers": []}
    with pytest.raises(InputError):
        parse_config("", "x.cfg")
