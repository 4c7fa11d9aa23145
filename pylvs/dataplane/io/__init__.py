"""I/O adapters around ``engine.process``: packets in, batches to the engine, verdicts out.

* ``nfq_native.NativeQueue``: NFQUEUE, batched, in C (``csrc/nfq.c`` over libmnl and
  libnetfilter_queue): many packets per system call, all verdicts of a batch in one
  ``sendmsg``, fail-open, GSO super-packets whole.  The fast NAT path.
* ``nfqueue.PacketQueue``: NFQUEUE one packet at a time through the ``netfilterqueue``
  package: simple and portable; no fail-open, GSO or batched verdicts.
* ``nfq_loop.NativeLoop`` / ``afxdp.AfXdpLoop`` / ``afpacket.AfPacketLoop``: the whole
  loop in C (``csrc/loop.c``, the engine called as a cfunc) over NFQUEUE, AF_XDP sockets,
  or an AF_PACKET tap (frames in and out for direct routing and tunnelling).
* ``replay``: a pcap or a list of scapy packets through the engine (tests, teaching).

Both NFQUEUE adapters have the same shape: ``Queue(queue_num, handle, *, rows,
fail_open, gso, on_dr, rcvbuf, maxlen)``, ``run(stop, poll)``, ``stats()``, ``close()``;
``_verdict`` holds what they share (verdict mapping, direct-routing hand-off, counters).
"""
