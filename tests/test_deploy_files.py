"""The shipped deployment files are safe as they are: no shared secret anyone can read in the
repository, nothing published beyond the host unless a TLS proxy stands in front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.existing.yml"]
LOOPBACK = {"127.0.0.1", "::1"}
# a service of this name in docker-compose.yml would be the TLS reverse proxy Synapse sits behind
PROXY = "proxy"


def load(name: str) -> Any:
    return yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))


def host_address(entry: str | dict[str, Any]) -> str:
    """The host address a port entry publishes on ("" for every interface)."""
    if isinstance(entry, dict):  # long syntax
        return str(entry.get("host_ip", ""))
    spec = str(entry).split("/", 1)[0]
    if spec.startswith("["):  # [::1]:8008:8008
        return spec[1 : spec.index("]")]
    parts = spec.split(":")
    return parts[0] if len(parts) == 3 else ""


def test_host_address_reads_every_port_syntax():
    assert host_address("8008:8008") == "" and host_address("8008") == ""
    assert host_address("127.0.0.1:8008:8008/tcp") == "127.0.0.1"
    assert host_address("[::1]:8008:8008") == "::1"
    assert host_address({"target": 8008, "published": 8008, "host_ip": "127.0.0.1"}) == "127.0.0.1"


def test_synapse_config_ships_no_registration_secret():
    config = load("config/synapse/homeserver.yaml")
    # whoever knows this secret can make admin accounts: it must not be a value in a repository
    for key in ("registration_shared_secret", "macaroon_secret_key", "form_secret"):
        assert key not in config, key
    path = config["registration_shared_secret_path"]
    # Synapse writes it at its first start, into its own volume (the config folder is read-only)
    assert path.startswith("/data/")
    volumes = load("docker-compose.yml")["services"]["synapse"]["volumes"]
    assert "synapse-data:/data" in volumes and "./config/synapse:/config:ro" in volumes
    assert config["enable_registration"] is False


@pytest.mark.parametrize("compose_file", COMPOSE_FILES)
def test_services_publish_on_loopback_only(compose_file):
    services = load(compose_file)["services"]
    proxied = compose_file == "docker-compose.yml" and PROXY in services
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        for entry in service.get("ports", []):
            if proxied and name == PROXY:
                continue  # the TLS proxy is the one door to the outside
            assert host_address(entry) in LOOPBACK, (name, entry)


def test_forwarded_addresses_are_trusted_only_behind_the_proxy():
    listeners = load("config/synapse/homeserver.yaml")["listeners"]
    services = load("docker-compose.yml")["services"]
    for listener in listeners:
        if listener.get("x_forwarded"):
            # X-Forwarded-For from anyone else would let them pose as any address
            assert PROXY in services, "x_forwarded without a proxy in docker-compose.yml"
