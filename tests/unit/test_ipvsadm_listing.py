"""ipvsadm -L -n / --stats / --rate layouts, byte for byte against reference 9.4."""

from __future__ import annotations

from pylvs.ipvsadm import format_list, format_rate, format_stats


def dest(addr, port, fwd, w, act, inact, stats=(0, 0, 0, 0, 0), rates=(0, 0, 0, 0, 0)):
    return {"addr": addr, "port": port, "forward": fwd, "weight": w, "active": act, "inactive": inact,
            "stats": dict(zip(("conns", "inpkts", "outpkts", "inbytes", "outbytes"), stats, strict=True)),
            "rates": dict(zip(("cps", "inpps", "outpps", "inbps", "outbps"), rates, strict=True))}


def svc(proto, vip, port, sched, dests, fwmark=0, persistent=0, pmask="255.255.255.255",
        stats=(0, 0, 0, 0, 0), rates=(0, 0, 0, 0, 0)):
    return {"proto": proto, "vip": vip, "port": port, "fwmark": fwmark, "scheduler": sched,
            "persistent": persistent, "pmask": pmask, "dests": dests,
            "stats": dict(zip(("conns", "inpkts", "outpkts", "inbytes", "outbytes"), stats, strict=True)),
            "rates": dict(zip(("cps", "inpps", "outpps", "inbps", "outbps"), rates, strict=True))}


SNAP = {"size": 4096, "services": [
    svc("TCP", "192.168.1.100", 443, "rr", [dest("10.0.0.12", 443, "Route", 0, 1, 7),
                                            dest("10.0.0.11", 443, "Route", 1, 3, 10)],
        persistent=300, pmask="255.255.255.0"),
    svc("TCP", "192.168.1.100", 0, "wlc", [dest("10.0.0.21", 0, "Tunnel", 1, 0, 0)], fwmark=100),
    svc("TCP", "192.168.1.100", 80, "wlc", [dest("10.0.0.11", 80, "Masq", 1, 12, 140),
                                            dest("10.0.0.12", 80, "Masq", 2, 25, 301)]),
]}


def test_list_numeric_layout():
    assert format_list(SNAP) == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  192.168.1.100:80 wlc\n"
        "  -> 10.0.0.11:80                 Masq    1      12         140       \n"
        "  -> 10.0.0.12:80                 Masq    2      25         301       \n"
        "TCP  192.168.1.100:443 rr persistent 300 mask 255.255.255.0\n"
        "  -> 10.0.0.11:443                Route   1      3          10        \n"
        "  -> 10.0.0.12:443                Route   0      1          7         \n"
        "FWM  100 wlc\n"
        "  -> 10.0.0.21:0                  Tunnel  1      0          0         \n"
    )


def test_stats_layout_and_large_numbers():
    snap = {"size": 4096, "services": [
        svc("TCP", "192.168.1.100", 80, "wlc", [
            dest("10.0.0.11", 80, "Masq", 1, 0, 0, (760, 24101, 23990, 1955012, 31234567)),
            dest("10.0.0.12", 80, "Masq", 1, 0, 0, (763, 24110, 24002, 1957333, 31299001))],
            stats=(1523, 48211, 0, 3912345, 0)),
        svc("UDP", "192.168.1.100", 53, "sh", [dest("10.0.0.31", 53, "Masq", 1, 0, 0)],
            stats=(981234567, 0, 0, 0, 0)),
    ]}
    assert format_stats(snap) == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n"
        "  -> RemoteAddress:Port\n"
        "TCP  192.168.1.100:80                 1523    48211        0  3912345        0\n"
        "  -> 10.0.0.11:80                      760    24101    23990  1955012 31234567\n"
        "  -> 10.0.0.12:80                      763    24110    24002  1957333 31299001\n"
        "UDP  192.168.1.100:53              981234K        0        0        0        0\n"
        "  -> 10.0.0.31:53                        0        0        0        0        0\n"
    )
    assert "981234567" in format_stats(snap, exact=True)


def test_rate_layout():
    snap = {"size": 4096, "services": [
        svc("TCP", "192.168.1.100", 80, "wlc", [
            dest("10.0.0.11", 80, "Masq", 1, 0, 0, rates=(2, 21, 20, 1460, 27800)),
            dest("10.0.0.12", 80, "Masq", 1, 0, 0, rates=(1, 20, 19, 1410, 26900))],
            rates=(3, 41, 0, 2870, 0))]}
    assert format_rate(snap) == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n"
        "  -> RemoteAddress:Port\n"
        "TCP  192.168.1.100:80                    3       41        0     2870        0\n"
        "  -> 10.0.0.11:80                        2       21       20     1460    27800\n"
        "  -> 10.0.0.12:80                        1       20       19     1410    26900\n"
    )
