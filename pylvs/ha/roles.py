"""Which router this is: pulse's "am I primary?" and the peer's addresses (reference 2.1).

pulse is the master when any local interface owns ``primary``; otherwise it is the backup.
Reads the addresses of the current network namespace through pyroute2.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from pylvs.config.model import Config


def local_addresses() -> dict[str, str]:
    """IPv4 address -> device name, in this network namespace."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        return {a.get_attr("IFA_ADDRESS"): names.get(a["index"], "?") for a in ipr.get_addr(family=2)}


def is_master(config: Config, addresses: dict[str, str] | None = None) -> bool:
    """True on the router that owns ``primary`` (pulse's test)."""
    return str(config.primary) in (local_addresses() if addresses is None else addresses)


def own_addresses(config: Config, master: bool) -> tuple[IPv4Address, IPv4Address]:
    """(public, private) heartbeat addresses of this router."""
    if master:
        return config.primary, config.primary_private_address
    return config.backup, config.backup_private_address


def peer_addresses(config: Config, master: bool) -> tuple[IPv4Address, IPv4Address]:
    """(public, private) heartbeat addresses of the other router."""
    return own_addresses(config, not master)


def peer_private_address(config: Config) -> str:
    """The other router's private address (unicast connection sync goes there)."""
    return str(peer_addresses(config, is_master(config))[1])
