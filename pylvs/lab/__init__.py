"""Network-namespace lab topologies for tests, demos and benchmarks.

The RHEL 5 guide's LVS layouts (nat, direct, tunnel) with clients, one or two directors,
a router and N real servers, each host in its own network namespace; see docs/lab.md.

    from pylvs.lab import lab_topology
    with lab_topology("nat", real_servers=3, directors=1) as lab:
        print(lab.http_get("dir1", lab.rips[0]).body)   # b"rs1\\n"

Modules: topology (Lab, build_lab, lab_topology, addresses), netns (namespace
primitives), servers (HTTP + UDP echo run on real servers), tunnel (ipip or the userspace
decapsulator), probes (HTTP/UDP/ARP/IPIP probes), cleanup (exit/signal teardown), state
(/run/pylvs-lab records used by `pylvs lab`), runner (Lab.call).
"""

from pylvs.lab.topology import (
    DIRECT,
    KINDS,
    NAT,
    NAT_ROUTER,
    TUNNEL,
    VIP,
    Host,
    Interface,
    Lab,
    build_lab,
    lab_topology,
)

__all__ = [
    "DIRECT", "KINDS", "NAT", "NAT_ROUTER", "TUNNEL", "VIP",
    "Host", "Interface", "Lab", "build_lab", "lab_topology",
]
