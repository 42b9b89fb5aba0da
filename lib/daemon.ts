/**
 * The daemon: for each configured interface plan, load, apply and attach;
 * then wait for a signal and undo exactly what was done.
 * @module
 */

import type { InterfaceConfig } from "./config/types.ts";
import { formatAddr, parseAddr } from "./config/cidr.ts";
import { formatRanges } from "./config/ranges.ts";
import * as libc from "./ffi/libc.ts";
import * as log from "./log.ts";
import { applyPlan } from "./nat/apply.ts";
import { attach, type Attachment, detach } from "./nat/attach.ts";
import { closeNat, loadNat, type NatObject } from "./nat/loader.ts";
import type { RoConfig } from "./nat/codec.ts";
import { type IfAddr, type NatPlan, planInterface } from "./nat/plan.ts";

/** A start-up problem with one interface (exit code 2 when it is the only one). */
export class InterfaceError extends Error {
  constructor(readonly ifname: string, message: string) {
    super(`${ifname}: ${message}`);
    this.name = "InterfaceError";
  }
}

/** One interface being served. */
export interface Served {
  ifname: string;
  ifindex: number;
  nat: NatObject;
  attachment: Attachment;
  plan: NatPlan;
}

const MS = 1_000_000n;

/** The read-only BPF configuration of an interface. */
export function roConfigOf(ic: InterfaceConfig, hasEth = true): RoConfig {
  const t = ic.timeouts;
  return {
    timeoutFragment: BigInt(t.fragment) * MS,
    timeoutIcmp: BigInt(t.icmpDefault) * MS,
    timeoutUdpMin: BigInt(t.udpMin) * MS,
    timeoutUdp: BigInt(t.udpDefault) * MS,
    timeoutTcpTrans: BigInt(t.tcpTrans) * MS,
    timeoutTcpEst: BigInt(t.tcpEst) * MS,
    logLevel: ic.bpfLogLevel,
    hasEth,
    nat44: ic.nat44,
    nat66: ic.nat66,
  };
}

/** Addresses of an interface in this network namespace. */
export function interfaceAddrs(ifname: string): IfAddr[] {
  return Deno.networkInterfaces()
    .filter((n) => n.name === ifname)
    .map((n) => ({
      family: n.family === "IPv4" ? 4 as const : 6 as const,
      addr: parseAddr(n.address),
      prefixLen: Number(n.cidr.split("/")[1]),
    }));
}

/** Resolves name and index of a configured interface. */
export function resolveInterface(ic: InterfaceConfig): { ifname: string; ifindex: number } {
  if (ic.ifName) {
    const ifindex = libc.ifNameToIndex(ic.ifName);
    if (!ifindex) throw new InterfaceError(ic.ifName, "no such interface");
    return { ifname: ic.ifName, ifindex };
  }
  const ifname = libc.ifIndexToName(ic.ifIndex ?? 0);
  if (!ifname) throw new InterfaceError(`ifindex ${ic.ifIndex}`, "no such interface");
  return { ifname, ifindex: ic.ifIndex! };
}

function hasEthernet(ifname: string): boolean {
  try {
    return Deno.readTextFileSync(`/sys/class/net/${ifname}/type`).trim() === "1";
  } catch {
    return true;
  }
}

/** Plans, loads, fills and attaches one interface. */
export async function serveInterface(ic: InterfaceConfig): Promise<Served> {
  const { ifname, ifindex } = resolveInterface(ic);
  const addrs = interfaceAddrs(ifname);
  const plan = planInterface(ic, addrs);
  if (ic.nat44 && !plan.defaultExt[4]) {
    throw new InterfaceError(ifname, "no IPv4 address to use as external address (NAT44 is on)");
  }
  if (ic.nat66 && !ic.nat44 && !plan.defaultExt[6]) {
    throw new InterfaceError(ifname, "no IPv6 address to use as external address (NAT66 is on)");
  }
  const nat = await loadNat({
    ro: roConfigOf(ic, hasEthernet(ifname)),
    bindingMaxRecords: ic.bindingMaxRecords,
    ctMaxRecords: ic.ctMaxRecords,
  });
  log.debug("loaded BPF object", { ifname, load_ms: nat.loadMs.toFixed(1) });
  try {
    applyPlan(nat.maps, plan);
    const attachment = attach(ifindex, ifname, nat.egressFd, nat.ingressFd);
    for (const fam of [4, 6] as const) {
      const d = plan.defaultExt[fam];
      if (!d) continue;
      log.info("external address", {
        ifname,
        addr: formatAddr(d.addr),
        tcp: formatRanges(d.cfg.tcp) || "off",
        udp: formatRanges(d.cfg.udp) || "off",
        icmp: formatRanges(d.cfg.icmp) || "off",
      });
    }
    return { ifname, ifindex, nat, attachment, plan };
  } catch (e) {
    closeNat(nat);
    throw e;
  }
}

/** Undoes {@link serveInterface}. */
export function stopServing(s: Served): void {
  detach(s.attachment);
  closeNat(s.nat);
}

/** Resolves on the first SIGINT or SIGTERM. */
export function waitForSignal(): Promise<Deno.Signal> {
  return new Promise((resolve) => {
    const sigs: Deno.Signal[] = ["SIGINT", "SIGTERM"];
    const handlers = sigs.map((sig) => {
      const h = () => {
        sigs.forEach((s, i) => Deno.removeSignalListener(s, handlers[i]));
        resolve(sig);
      };
      Deno.addSignalListener(sig, h);
      return h;
    });
  });
}
