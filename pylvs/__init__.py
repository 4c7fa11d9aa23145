"""pylvs: the Linux Virtual Server stack of RHEL 5 (Piranha) as a userspace data plane.

The public pieces live in subpackages named for what they do: ``pylvs.config`` (lvs.cf),
``pylvs.sched`` (schedulers), ``pylvs.dataplane`` (the packet core), ``pylvs.lab``
(network-namespace topologies).  See docs/architecture.md.
"""

__version__ = "0.1.0"
