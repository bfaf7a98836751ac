"""Builders for unit tests: observed links and a fake kernel shaped like the lab."""

from __future__ import annotations

import ipaddress

from wanhooks.kernel.fake import FakeKernel
from wanhooks.model import (
    IFF_LOWER_UP,
    IFF_NOARP,
    IFF_POINTOPOINT,
    IFF_UP,
    Address,
    BalanceMode,
    Config,
    GroupKind,
    KernelFeatures,
    LinkConfig,
    MainDefault,
    ObservedLink,
)


def wan(
    index: int, name: str, i: int, *, up: bool = True, carrier: bool = True, v6: bool = True
) -> ObservedLink:
    """A lab WAN: 100.64.i.2/24 and fd00:i::2/64 (index is the ifindex)."""
    flags = (IFF_UP if up else 0) | (IFF_LOWER_UP if up and carrier else 0)
    addrs = [Address(4, ipaddress.ip_address(f"100.64.{i}.2"), 24)]
    if v6:
        addrs.append(Address(6, ipaddress.ip_address(f"fd00:{i:x}::2"), 64))
        addrs.append(Address(6, ipaddress.ip_address(f"fe80::{i:x}"), 64, scope="link"))
    return ObservedLink(index=index, name=name, flags=flags, addresses=tuple(addrs))


def tun(index: int, name: str, addr: str) -> ObservedLink:
    return ObservedLink(
        index=index,
        name=name,
        flags=IFF_UP | IFF_LOWER_UP | IFF_POINTOPOINT | IFF_NOARP,
        has_lladdr=False,
        kind="tun",
        addresses=(Address(4, ipaddress.ip_address(addr), 32),),
    )


def main_default(family: int, oif: int, gateway: str | None, metric: int = 100) -> MainDefault:
    return MainDefault(
        family=family,
        oif=oif,
        gateway=ipaddress.ip_address(gateway) if gateway else None,
        metric=metric,
        protocol=16,
    )


def lab_config(weights: tuple[int, ...] = (1, 2, 1), **kw: object) -> Config:
    links = tuple(
        LinkConfig(
            interface=f"w{i}",
            weight=w,
            gateway4=ipaddress.IPv4Address(f"100.64.{i}.1"),
            gateway6=ipaddress.IPv6Address("fe80::1"),
            line=3 + 3 * i,
        )
        for i, w in enumerate(weights, start=1)
    )
    return Config(
        links=links,
        balance=kw.get("balance", BalanceMode.PER_CONNECTION),  # type: ignore[arg-type]
        group=kw.get("group", GroupKind.AUTO),  # type: ignore[arg-type]
    )


def lab_kernel(n: int = 3, features: KernelFeatures | None = None) -> FakeKernel:
    """Router with lo (1) and WANs w1..wn at ifindex 10+i, and the sysctls plan() sets."""
    kernel = FakeKernel(features=features or KernelFeatures())
    kernel.set_link(ObservedLink(index=1, name="lo", flags=0x8 | IFF_UP | IFF_LOWER_UP))
    for i in range(1, n + 1):
        kernel.set_link(wan(10 + i, f"w{i}", i))
        for path in (
            "ipv4/conf/{}/rp_filter",
            "ipv4/conf/{}/ignore_routes_with_linkdown",
            "ipv6/conf/{}/ignore_routes_with_linkdown",
        ):
            kernel.sysctls["net/" + path.format(f"w{i}")] = "0"
    for proto in ("ipv4", "ipv6"):
        kernel.sysctls[f"net/{proto}/fib_multipath_hash_policy"] = "0"
        kernel.sysctls[f"net/{proto}/fib_multipath_hash_fields"] = "7"
    return kernel
