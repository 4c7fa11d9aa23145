"""netctl: the one control module that touches the kernel (VIP and NAT-router addresses,
capture and notrack rules, sysctls, neighbours).  See docs/netctl.md.

    from pylvs.netctl import plan_for, NetCtl
    plan = plan_for(config, queue=0, capture="nfqueue", fail_open=True)   # pure
    ctl = NetCtl()          # acts on the current network namespace (root needed)
    ctl.apply(plan); ...; ctl.update(new_plan); ...; ctl.teardown()

``DryRun()`` has NetCtl's methods and records what it would do in ``.actions``.
"""

from pylvs.netctl.kernel import ADDR_PROTO, Capabilities, DryRun, Neighbour, NetCtl, detect_capabilities
from pylvs.netctl.plan import CAPTURES, Address, Chain, NetCtlError, Plan, PlanError, plan_for

__all__ = ["ADDR_PROTO", "CAPTURES", "Address", "Capabilities", "Chain", "DryRun", "NetCtl", "NetCtlError",
           "Neighbour", "Plan", "PlanError", "detect_capabilities", "plan_for"]
