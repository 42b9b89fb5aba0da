/**
 * The daemon: each configured interface is brought to the state its
 * configuration and the live network ask for (`reconcile`): object loaded,
 * maps filled from the current addresses, filters attached to the current
 * ifindex. Netlink events trigger the same reconciliation, so address
 * changes, link flaps and a deleted-and-recreated interface need no restart.
 * @module
 */

import type { Defaults, InterfaceConfig, PortRange } from "./config/types.ts";
import {
  dropStaleRules,
  hairpinDown,
  hairpinRepair,
  type HairpinState,
  hairpinUp,
  sweepHairpinLeftovers,
} from "./hairpin.ts";
import { EXT_FLAGS } from "./nat/codec.ts";
import { formatAddr, isLinkLocal6, parseAddr } from "./config/cidr.ts";
import {
  formatRanges,
  intersectRanges,
  mergeRanges,
  parseLocalPortRange,
} from "./config/ranges.ts";
import * as libc from "./ffi/libc.ts";
import { textKey } from "./key.ts";
import * as log from "./log.ts";
import { describeConflict, findConflicts, type NamedNet } from "./conflict.ts";
import { applyPlan, bindingsOutsideRanges, defaultsWithSlots, purgeStale } from "./nat/apply.ts";
import { attach, type Attachment, detach, release, replaced, stillAttached } from "./nat/attach.ts";
import { bumpEpoch, closeNat, loadNat, type NatObject } from "./nat/loader.ts";
import { slotCount } from "./nat/records.ts";
import type { RoConfig } from "./nat/codec.ts";
import { type IfAddr, type NatPlan, planInterface } from "./nat/plan.ts";
import { afterAttach, stateLoadOptions, syncBindingsAtStart } from "./state/serve.ts";
import { ARPHRD, IFA_F, ownAddr } from "./netlink/msg.ts";
import { dumpAddrs } from "./netlink/rtnl.ts";

/** A start-up problem with one interface (exit code 2 when it is the only one). */
export class InterfaceError extends Error {
  constructor(readonly ifname: string, message: string) {
    super(`${ifname}: ${message}`);
    this.name = "InterfaceError";
  }
}

/**
 * A reload's new instance could not start for want of an external address ({@link
 * startInterface} with `takeover`): the running instance goes on, and the new configuration
 * waits for the address (lib/lifecycle.ts, retryPending).
 */
export class AddressWaitError extends InterfaceError {
  constructor(ifname: string, message: string) {
    super(ifname, message);
    this.name = "AddressWaitError";
  }
}

/** A reload's configuration of an interface, waiting for an address to start with. */
export interface PendingStart {
  ic: InterfaceConfig;
  defaults: Pick<Defaults, "ipv4LocalRulePref" | "ipv6LocalRulePref">;
}

/** One interface being served (or waited for). */
export interface Served {
  ic: InterfaceConfig;
  /** Interface name (resolved once from an index when configured by index). */
  ifname: string;
  nat: NatObject | null;
  /**
   * Bindings carried over in pinned maps: in the records when `nat` was loaded, less those the
   * first purge dropped (their external address is not the interface's); null until counted.
   */
  carried: number | null;
  attachment: Attachment | null;
  plan: NatPlan | null;
  /** Summary of the plan last applied, to log what changed. */
  summary: string;
  /** The whole plan last applied, as text ({@link planKey}): equal, nothing to write. */
  planKey: string;
  /** Local rule preferences (from `[defaults]`) for hairpin routing. */
  localPref: { 4: number; 6: number };
  hairpin: HairpinState[];
  /** Address conflicts last reported (RFC 4787 REQ-7), to log only changes. */
  conflicts?: string;
  /** Set by {@link stopServing}: a reconciliation queued before then does nothing. */
  stopped?: boolean;
  /** Its first attachment takes over this process's own (a reload restarting it). */
  takeover?: boolean;
  /** The object whose pinned state's summary was logged (at its first attachment). */
  summarized?: NatObject | null;
  /** The configuration a reload left waiting for an address (this instance serves meanwhile). */
  pending?: PendingStart;
  /** Whether `nat` was built for a link with an Ethernet header (`has_eth`). */
  l2?: boolean;
  /** What the purges of departed external addresses dropped, since this process started. */
  purged?: { bindings: number; sessions: number; addressOnly: number };
  /** The bindings outside their ranges as last logged (`bindingsOutsideRanges`), "" for none. */
  outsideRanges?: string;
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
    timeoutTcpClosing: BigInt(t.tcpClosing) * MS,
    logLevel: ic.bpfLogLevel,
    hasEth,
    nat44: ic.nat44,
    nat66: ic.nat66,
    fibExternal: ic.bpfFibLookupExternal,
    inboundIcmpx: ic.allowInboundIcmpx,
    flowCacheSlots: ic.flowCacheSlots,
    sessionCounters: ic.sessionCounters,
    timeoutOther: ic.snatOtherProtocols ? BigInt(t.other) * MS : 0n,
    hostMax: ic.bindingMaxPerHost,
    hostSessMax: ic.sessionMaxPerHost,
  };
}

/** Addresses of an interface in this network namespace (link-local IPv6 left out). */
export function interfaceAddrs(ifname: string): IfAddr[] {
  return Deno.networkInterfaces()
    .filter((n) => n.name === ifname && !/^fe[89ab]/i.test(n.address))
    .map((n) => ({
      family: n.family === "IPv4" ? 4 as const : 6 as const,
      addr: parseAddr(n.address.replace(/%.*$/, "")),
      prefixLen: Number(n.cidr.split("/")[1]),
    }));
}

/** Orders addresses: usable first, then tentative (DAD not finished), then deprecated. */
function addrRank(flags: number): number {
  return flags & IFA_F.DEPRECATED ? 2 : flags & IFA_F.TENTATIVE ? 1 : 0;
}

/**
 * The addresses of an interface that may be external ones, best first (a netlink dump, for
 * their flags): link-local IPv6 left out, and any whose duplicate address detection failed
 * (another host's); tentative, then deprecated ones after the others (RFC 4862 5.5.4), so
 * neither becomes the default while a preferred address is there.
 */
export async function externalAddrs(ifname: string): Promise<IfAddr[]> {
  const ifindex = libc.ifNameToIndex(ifname);
  if (!ifindex) return [];
  return (await dumpAddrs())
    .filter((m) =>
      m.ifindex === ifindex && !(m.flags & IFA_F.DADFAILED) && !isLinkLocal6(ownAddr(m))
    )
    .sort((x, y) => addrRank(x.flags) - addrRank(y.flags)) // stable: the kernel's order else
    .map((m) => ({ family: m.family, addr: ownAddr(m), prefixLen: m.prefixLen }));
}

/** The interface's link type (ARPHRD_*, /sys/class/net/IF/type); null when unreadable. */
function linkType(ifname: string): number | null {
  try {
    return Number(Deno.readTextFileSync(`/sys/class/net/${ifname}/type`).trim());
  } catch {
    return null;
  }
}

/** True for a loopback interface (ARPHRD_LOOPBACK). */
function isLoopback(ifname: string): boolean {
  return linkType(ifname) === ARPHRD.LOOPBACK;
}

/** True when the interface has an Ethernet header (ARPHRD_ETHER; assumed when unreadable). */
export function hasEthernet(ifname: string): boolean {
  return (linkType(ifname) ?? ARPHRD.ETHER) === ARPHRD.ETHER;
}

/** The name a configured interface has now: its `if_name`, or its index's; null for neither. */
export function resolvedName(ic: InterfaceConfig): string | null {
  return ic.ifName || libc.ifIndexToName(ic.ifIndex ?? 0);
}

/** Name of a configured interface; an index must exist now. */
function nameOf(ic: InterfaceConfig): string {
  const n = resolvedName(ic);
  if (!n) throw new InterfaceError(`ifindex ${ic.ifIndex}`, "no such interface");
  return n;
}

/** The default external address of each family, then every external address, for the log. */
export function summarize(plan: NatPlan): string {
  return ([4, 6] as const).map((f) => {
    const d = plan.defaultExt[f];
    return d ? formatAddr(d.addr) : `no IPv${f}`;
  }).join(", ") + ` (externals: ${
    plan.resolved.map((r) => formatAddr(r.addr)).join(" ") || "none"
  })`;
}

/**
 * All a plan writes into the maps and hairpin routes take from it, as text: a change of any
 * external address, not only of the defaults or their count, differs.
 */
export function planKey(plan: NatPlan): string {
  return textKey(plan);
}

/**
 * Starts serving one interface. A missing interface configured by name is
 * waited for; one without an address of an enabled family is an error, as is one that
 * `others` serve already (configured once by name, once by index). A failure part-way undoes
 * what was done (object, filters, hairpin routes).
 */
export async function startInterface(
  ic: InterfaceConfig,
  defaults?: Pick<Defaults, "ipv4LocalRulePref" | "ipv6LocalRulePref">,
  others: Served[] = [],
  takeover = false,
): Promise<Served> {
  const s: Served = {
    ic,
    ifname: nameOf(ic),
    nat: null,
    attachment: null,
    plan: null,
    summary: "",
    planKey: "",
    localPref: { 4: defaults?.ipv4LocalRulePref ?? 200, 6: defaults?.ipv6LocalRulePref ?? 200 },
    hairpin: [],
    carried: null,
    takeover,
  };
  if (others.some((o) => o.ifname === s.ifname)) {
    throw new InterfaceError(
      s.ifname,
      "configured twice (by if_name and by if_index); merge the two entries",
    );
  }
  if (libc.ifNameToIndex(s.ifname) === 0) {
    log.warn("interface does not exist (yet); waiting for it", { ifname: s.ifname });
    return s;
  }
  if (isLoopback(s.ifname)) {
    throw new InterfaceError(
      s.ifname,
      "a loopback interface cannot be the external one (nothing leaves through it)",
    );
  }
  const plan = planInterface(ic, await externalAddrs(s.ifname));
  const missing = ic.nat44 && !plan.defaultExt[4]
    ? "no IPv4 address to use as external address (NAT44 is on)"
    : ic.nat66 && !ic.nat44 && !plan.defaultExt[6]
    ? "no IPv6 address to use as external address (NAT66 is on)"
    : null;
  // At start (a WAN whose address DHCP or PPPoE has not brought yet) the programs run: new flows
  // of that family are dropped, never leaked, until an address comes (followed; reconcile says
  // so). A reload keeps the old configuration meanwhile.
  if (missing && takeover) throw new AddressWaitError(s.ifname, missing);
  try {
    await reconcile(s);
  } catch (e) {
    await stopServing(s);
    throw e;
  }
  return s;
}

/** The ports the kernel gives the router's own connections (this namespace's sysctl), or null. */
export function localPortRange(
  path = "/proc/sys/net/ipv4/ip_local_port_range",
): PortRange | null {
  try {
    return parseLocalPortRange(Deno.readTextFileSync(path));
  } catch {
    return null;
  }
}

/**
 * Says when an external address's TCP or UDP ranges overlap the router's ephemeral ports: its
 * own connections there hold mappings, and move to another port where a host's mapping holds
 * theirs (bpf/einat.bpf.c, einat_egress_own; counters own_binding, own_moved).
 */
function logEphemeralOverlap(
  ifname: string,
  addr: string,
  cfg: { tcp: PortRange[]; udp: PortRange[] },
  eph: PortRange | null,
): void {
  if (!eph) return;
  const tcp = intersectRanges(cfg.tcp, eph), udp = intersectRanges(cfg.udp, eph);
  if (tcp.length === 0 && udp.length === 0) return;
  log.info(
    "the NAT's ranges overlap the router's ephemeral ports: its own connections there hold " +
      "mappings, on another port where a host holds theirs",
    {
      ifname,
      addr,
      ...(tcp.length ? { tcp: formatRanges(tcp) } : {}),
      ...(udp.length ? { udp: formatRanges(udp) } : {}),
      ip_local_port_range: `${eph.start}-${eph.end}`,
    },
  );
}

/**
 * Brings `s` in line with the network: attach to the interface's current
 * index (re-attaching after it was recreated), apply the externals its
 * addresses select and drop mappings of addresses that are gone.
 */
export async function reconcile(s: Served): Promise<void> {
  if (s.stopped) return;
  const ifindex = libc.ifNameToIndex(s.ifname);
  if (ifindex === 0) {
    if (s.attachment) await letGo(s, "waiting for it");
    return;
  }
  const eth = hasEthernet(s.ifname);
  if (s.nat && s.l2 !== undefined && s.l2 !== eth) {
    // The name is on a link of another kind now (a modem switching between raw IP and
    // Ethernet, a name reused): the programs are built for one kind, so the object is loaded
    // again (the pinned state carries the mappings over).
    log.warn("the interface's link type changed; loading its BPF object again", {
      ifname: s.ifname,
      l2: eth ? "ethernet" : "none",
    });
    if (s.attachment) await letGo(s, "loading it again");
    for (const h of s.hairpin.splice(0)) await hairpinDown(h);
    closeNat(s.nat);
    s.nat = null;
    s.plan = null;
    s.planKey = "";
    s.carried = null; // counted again for the new object, whose free-port hint starts empty
  }
  if (!s.nat) {
    s.l2 = eth;
    s.nat = await loadNat({
      ro: roConfigOf(s.ic, eth),
      bindingMaxRecords: s.ic.bindingMaxRecords,
      ctMaxRecords: s.ic.ctMaxRecords,
      preallocate: s.ic.preallocateMaps,
      extSlots: s.ic.externalSlots || undefined,
      ...stateLoadOptions(s.ic, s.ifname),
    });
    if (s.nat.csumFallback) {
      log.warn(
        "kernel BTF or bpf_cast_to_kern_ctx unavailable: checksums through the kernel's helpers (~35 ns a packet slower)",
        {
          ifname: s.ifname,
          reason: s.nat.csumFallback,
        },
      );
    }
    log.info("loaded BPF object", {
      ifname: s.ifname,
      load_ms: s.nat.loadMs.toFixed(1),
      l2: eth ? "ethernet" : "none",
      csum: s.nat.csum,
    });
  }

  const addrs = await externalAddrs(s.ifname);
  const plan = planInterface(s.ic, addrs);
  const summary = summarize(plan);
  const key = planKey(plan);
  const planChanged = key !== s.planKey || !s.plan;
  if (planChanged) {
    applyPlan(s.nat.maps, plan);
    const purged = purgeStale(s.nat, plan);
    // For the metrics: what the purge dropped since this process started (no map counts it).
    s.purged = {
      bindings: (s.purged?.bindings ?? 0) + purged.bindings,
      sessions: (s.purged?.sessions ?? 0) + purged.sessions,
      addressOnly: (s.purged?.addressOnly ?? 0) + purged.addressOnly,
    };
    for (const u of purged.unplaced) {
      log.warn("no slot for an external address: no new mappings are made on it", {
        ifname: s.ifname,
        addr: formatAddr(u.addr),
        external_slots: slotCount(s.nat.maps.records),
      });
    }
    for (const m of defaultsWithSlots(s.nat.maps, plan)) {
      log.warn("the default external address has no slot: new mappings are made on one that has", {
        ifname: s.ifname,
        addr: formatAddr(m.addr),
        instead_of: formatAddr(m.instead),
        external_slots: slotCount(s.nat.maps.records),
      });
    }
    // No flow-cache slot serves what was purged, nor a pass verdict of the old configuration
    // (bpf/lib/flowcache.h, flow_pass_cached): each cached flow takes the lookups once more.
    bumpEpoch(s.nat);
    if (s.plan) {
      log.info("external addresses changed", {
        ifname: s.ifname,
        from: s.summary,
        to: summary,
        dropped_bindings: purged.bindings,
        dropped_sessions: purged.sessions,
        ...(purged.addressOnly ? { dropped_address_only: purged.addressOnly } : {}),
      });
    } else if (purged.bindings || purged.sessions || purged.addressOnly) {
      // pinned state of a run with other external addresses (or families enabled)
      log.info(
        "pinned mappings dropped: their external address is not one einat translates to now (gone, or its family's NAT off)",
        {
          ifname: s.ifname,
          gone: purged.departed.join(", "),
          now: summary,
          dropped_bindings: purged.bindings,
          dropped_sessions: purged.sessions,
          ...(purged.addressOnly ? { dropped_address_only: purged.addressOnly } : {}),
        },
      );
    }
    // Bindings a narrowed range (or a protocol turned off) left outside: kept until idle, as
    // conntrack entries outlive a changed rule; said once, and again when that changes.
    const outside = bindingsOutsideRanges(s.nat.maps, plan)
      .map((o) => `${o.external}/${o.protocol}=${o.bindings}`).join(", ");
    if (outside && outside !== (s.outsideRanges ?? "")) {
      log.info(
        "bindings outside the port ranges kept: they map until idle (einat --flush drops them)",
        { ifname: s.ifname, bindings: outside },
      );
    }
    s.outsideRanges = outside;
    // After the first purge, before attaching (no program of ours counts yet): what is carried
    // over, as the start's summary reports it.
    s.carried ??= syncBindingsAtStart(s.nat);
    const eph = localPortRange(); // read once for both families' external addresses
    for (const fam of [4, 6] as const) {
      const d = plan.defaultExt[fam];
      const enabled = fam === 4 ? s.ic.nat44 : s.ic.nat66;
      if (!d) {
        // Said when it starts so, and when the family's address goes: once each time.
        if (enabled && (!s.plan || s.plan.defaultExt[fam])) {
          log.warn(
            s.plan
              ? `no IPv${fam} external address any more: new IPv${fam} flows are dropped until ` +
                `one comes`
              : `no IPv${fam} address to use as external address (NAT${
                fam === 4 ? 44 : 66
              } is on); serving it, new flows wait for an address`,
            { ifname: s.ifname },
          );
        }
        continue;
      }
      // The family's other external addresses (their own ranges or flags, FIB-chosen sources,
      // hairpin destinations): which addresses einat counts as its own.
      const others = plan.externals
        .filter((e) =>
          e.family === fam && e.prefixLen === e.addr.length * 8 &&
          (e.cfg.flags & EXT_FLAGS.EXTERNAL) !== 0 && formatAddr(e.addr) !== formatAddr(d.addr)
        )
        .map((e) => formatAddr(e.addr));
      log.info("external address", {
        ifname: s.ifname,
        addr: formatAddr(d.addr),
        tcp: formatRanges(d.cfg.tcp) || "off",
        udp: formatRanges(d.cfg.udp) || "off",
        icmp: formatRanges(d.cfg.icmp) || "off",
        ...(others.length ? { others: others.join(",") } : {}),
      });
      logEphemeralOverlap(s.ifname, formatAddr(d.addr), d.cfg, eph);
    }
    s.plan = plan;
    s.summary = summary;
    s.planKey = key;
  }
  reportConflicts(s, addrs);

  let routingChanged = planChanged || !s.attachment;
  if (s.attachment && s.attachment.ifindex !== ifindex) {
    log.info("interface was recreated", {
      ifname: s.ifname,
      old_ifindex: s.attachment.ifindex,
      ifindex,
    });
    await letGo(s, "serving the new one");
    routingChanged = true;
  }
  if (!s.attachment) {
    s.attachment = attach(
      ifindex,
      s.ifname,
      s.nat.egressFd,
      s.nat.ingressFd,
      s.ic.preferTcx,
      s.takeover === true,
    );
    s.takeover = false;
    // The state's summary once per loaded object: an interface re-attached (recreated, renamed
    // back) serves the same maps, whose counts at load would be stale by now.
    if (s.summarized !== s.nat) {
      afterAttach(s.nat, s.ifname, s.carried ?? 0);
      s.summarized = s.nat;
    } else {
      log.info("attached again", { ifname: s.ifname, ifindex });
    }
  }
  if (routingChanged) await rehairpin(s, ifindex);
  // What the kernel dropped (the link taken down) is put back, also where rehairpin only held
  // again what the state before it held.
  await repairHairpin(s);
}

/**
 * Puts back what the kernel removed of the hairpin routing `s` holds: taking the link down drops
 * its routes and its permanent neighbour entry, and the link comes back up without them.
 */
async function repairHairpin(s: Served): Promise<void> {
  for (const h of s.hairpin) {
    try {
      const restored = await hairpinRepair(h);
      if (restored > 0) {
        log.info("hairpin routes restored (the kernel dropped them with the link)", {
          ifname: s.ifname,
          family: `IPv${h.family}`,
          routes: restored,
        });
      }
    } catch (e) {
      log.error("hairpin routes not restored", {
        ifname: s.ifname,
        family: `IPv${h.family}`,
        error: (e as Error).message,
      });
    }
  }
}

/**
 * Lets go of the interface einat is attached to: a link still there under another name (renamed
 * away, perhaps while another took the configured name) is not the configured interface any
 * more, so its filters and hairpin routes are removed; one that is gone took its filters along.
 */
async function letGo(s: Served, then: string): Promise<void> {
  const a = s.attachment!;
  const renamed = libc.ifIndexToName(a.ifindex);
  if (renamed) {
    for (const h of s.hairpin.splice(0)) await hairpinDown(h);
    detach(a);
    log.warn(`interface renamed; filters detached, ${then}`, {
      ifname: s.ifname,
      renamed_to: renamed,
    });
  } else {
    log.warn(`interface gone; filters went with it, ${then}`, { ifname: s.ifname });
    release(a);
  }
  s.attachment = null;
}

/** Internal networks of an interface's config: `snat_internals` and hairpin interfaces. */
function internalNets(ic: InterfaceConfig): NamedNet[] {
  const nets: NamedNet[] = ic.snatInternals.map((net) => ({ net, source: "snat_internals" }));
  const names = new Set([
    ...(ic.nat44 ? ic.ipv4HairpinRoute.internalIfNames : []),
    ...(ic.nat66 ? ic.ipv6HairpinRoute.internalIfNames : []),
  ]);
  for (const name of names) {
    if (name === "lo") continue;
    for (const a of interfaceAddrs(name)) nets.push({ net: a, source: name });
  }
  return nets;
}

/**
 * Logs external networks that overlap internal ones (RFC 4787 REQ-7), when that set
 * changes: hosts at those addresses outside are unreachable from inside.
 */
function reportConflicts(s: Served, addrs: IfAddr[]): void {
  const ext = addrs
    .filter((a) => a.family === 4 ? s.ic.nat44 : s.ic.nat66)
    .map((net) => ({ net, source: s.ifname }));
  const found = findConflicts(ext, internalNets(s.ic)).map(describeConflict);
  const key = found.join("; ");
  if (key === (s.conflicts ?? "")) return;
  s.conflicts = key;
  for (const line of found) {
    log.warn(`${line}: hosts outside at those addresses cannot be reached from inside`, {
      ifname: s.ifname,
      rfc: "RFC 4787 REQ-7",
      fix: "renumber the internal network",
    });
  }
  if (!found.length) {
    log.info("external and internal networks no longer overlap", { ifname: s.ifname });
  }
}

/** Whether an interface configuration sets up hairpin routing for `family`. */
export function hairpinOn(ic: InterfaceConfig, family: 4 | 6): boolean {
  const route = family === 4 ? ic.ipv4HairpinRoute : ic.ipv6HairpinRoute;
  return (family === 4 ? ic.nat44 : ic.nat66) && route.enable && route.internalIfNames.length > 0;
}

/** Interfaces and families (`ifname/4`) whose hairpin leftovers this process looked for. */
const hairpinSwept = new Set<string>();

/** (Re)installs hairpin routing for the current external addresses. */
async function rehairpin(s: Served, ifindex: number): Promise<void> {
  // The new routing is made before the old lets go (what both hold stays, held twice meanwhile),
  // so hairpinned traffic never meets a moment without its rules or routes.
  const old = s.hairpin.splice(0);
  try {
    await hairpinAll(s, ifindex);
  } finally {
    for (const h of old) await hairpinDown(h);
  }
  // Rules no instance here holds any more (other TCP ranges before a reload, an earlier einat's)
  // would send traffic to the router's own services out and back, where it is dropped.
  for (const fam of [4, 6] as const) {
    const route = fam === 4 ? s.ic.ipv4HairpinRoute : s.ic.ipv6HairpinRoute;
    if (!hairpinOn(s.ic, fam)) continue;
    const n = await dropStaleRules(fam, ifindex, route.tableId, route.internalIfNames).catch(
      (e) => {
        log.warn("stale hairpin rules not removed", {
          ifname: s.ifname,
          error: (e as Error).message,
        });
        return 0;
      },
    );
    if (n > 0) {
      log.info("stale hairpin rules removed", { ifname: s.ifname, family: `IPv${fam}`, rules: n });
    }
  }
}

async function hairpinAll(s: Served, ifindex: number): Promise<void> {
  for (const fam of [4, 6] as const) {
    const route = fam === 4 ? s.ic.ipv4HairpinRoute : s.ic.ipv6HairpinRoute;
    // Once a process and interface, at its first instance: what an earlier einat's hairpin
    // routing left on it is taken over with hairpin routing on (held anew), removed with it off.
    // (Later instances, a reload's, would find their predecessor's, which lets go itself.)
    const key = `${s.ifname}/${fam}`;
    if (!hairpinSwept.has(key)) {
      hairpinSwept.add(key);
      if (!hairpinOn(s.ic, fam)) {
        await sweepHairpinLeftovers(fam, ifindex, route.tableId).catch((e) =>
          log.warn("hairpin leftovers not removed", {
            ifname: s.ifname,
            family: `IPv${fam}`,
            error: (e as Error).message,
          })
        );
      }
    }
    if (!hairpinOn(s.ic, fam) || !s.plan) continue;
    const hairpinned = s.plan.externals.filter((e) =>
      e.family === fam && e.prefixLen === (fam === 4 ? 32 : 128) &&
      (e.cfg.flags & EXT_FLAGS.EXTERNAL) && !(e.cfg.flags & EXT_FLAGS.NO_HAIRPIN)
    );
    const dests = hairpinned.map((e) => e.addr);
    // The TCP rules match the NAT's TCP ports only: the router's own services stay local.
    const tcpPorts = mergeRanges(hairpinned.flatMap((e) => e.cfg.tcp));
    try {
      s.hairpin.push(
        await hairpinUp(
          fam,
          ifindex,
          route,
          s.localPref[fam],
          dests,
          hasEthernet(s.ifname),
          tcpPorts,
        ),
      );
    } catch (e) {
      log.error("hairpin routing not installed", {
        ifname: s.ifname,
        family: `IPv${fam}`,
        error: (e as Error).message,
      });
    }
  }
}

/**
 * Undoes {@link startInterface}: detaches, removes what einat created. True when another einat
 * took the interface over (--replace): what it uses was left in place.
 */
export async function stopServing(s: Served, handOver = false): Promise<boolean> {
  s.stopped = true;
  // `handOver`: a reload's new instance of the interface took it over (this process).
  if (handOver && s.attachment) s.attachment.handedOver = true;
  // After --replace the new einat uses the same hairpin routes and rules: leave them. (Within
  // this process the new instance holds its own; this one lets go of its holds below.)
  const handedOver = s.attachment !== null && replaced(s.attachment) && !handOver;
  for (const h of s.hairpin.splice(0)) if (!handedOver) await hairpinDown(h);
  if (s.attachment) detach(s.attachment);
  s.attachment = null;
  if (s.nat) closeNat(s.nat);
  s.nat = null;
  return handedOver;
}

/**
 * Attaches `s` again after a reload's new instance of its interface failed part-way (its undo
 * may have detached what it had taken over): the kernel keeps what is attached, only this
 * process's hold on the old attachment is let go first.
 */
export async function reattach(s: Served): Promise<void> {
  if (!s.nat || !s.attachment || stillAttached(s.attachment)) return;
  s.attachment.handedOver = true;
  release(s.attachment);
  s.attachment = null;
  s.takeover = true;
  s.planKey = ""; // the maps were written by the new instance's plan: write them again
  await reconcile(s);
}
