"""Failover benchmark (`make bench-failover`, the HA issue): how long a client waits for
a new connection through the VIP after the active router dies, and how many established
connections survive it.

    sudo .venv/bin/python -m bench.failover                     # 5 runs per setting
    python -m bench.failover [--runs 5] [--settings defaults,fast] [--conns 20]
                             [--connect-timeout 0.2] [--sync-timeout 10] [--io auto]
                             [--out FILE] [--keep-work]

One NAT lab (pylvs.lab, docs/lab.md) with two routers dir1 (primary) and dir2 (backup),
three real servers and one client.  For each setting (lvs.cf keepalive / deadtime):

| setting | keepalive | deadtime | goal |
|---|---|---|---|
| defaults | 2 s | 5 s | < 5.5 s |
| fast | 0.2 s | 0.6 s | < 1.1 s |

both routers run ``python -m pylvs pulse`` (pylvs.lab.director.LabPulse) with the lab's
lvs.cf (pylvs.lab.lvscf, ``backup = 1``), ``syncdaemon = 1`` / ``syncd_iface = eth1``
(established connections are synced to the standby) and pulse's gratuitous-ARP defaults
(``garp_count 5``, ``garp_interval 1``).  Each run:

1. waits (bounded) until one router is active and the other standby (status files) and
   the VIP answers;
2. opens ``--conns`` keep-alive HTTP connections from the client and does one GET on
   each (the real server's name is remembered), then waits up to ``--sync-timeout`` s
   until the standby's director counts that many connections (connection sync);
3. SIGKILLs the active router's pulse and director (LabPulse.kill) and cuts its links
   (eth0, eth1 down): a box that fails;
4. polls new HTTP GETs to the VIP from the client, each with a ``--connect-timeout``
   limit, until one succeeds: **the failover time** is from the kill to that reply;
5. does one GET on every held connection: a connection is *lost* when it fails or is
   answered by another real server;
6. brings the killed router back (links up, a new pulse; it comes back standby: no
   automatic failback), so the next run kills the router that is active now.

The new active router's pulse.log gives the timeline of each run: when pulse declared
the partner dead, when its director said ``active: forwarding``, and when the gratuitous
ARPs finished.  The report (bench.failover.report) gives per setting the times, median,
min, max, the goal (deadtime + 0.5 s) met or not, the lost connections per run, the
timeline medians and the machine; it is printed and written to ``--out`` when given.

Safety: traffic flows only between the lab's namespaces; nothing is configured in the
root namespace; pulses are ended by PID (LabPulse.stop / kill); the lab is removed by
its ``with`` block whatever happens.

Modules: cli (arguments, main), harness (the lab and the runs), report (pure: log
timelines, medians, markdown).
"""
