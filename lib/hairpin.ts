/**
 * Hairpin routing (RFC 4787 REQ-9): traffic from internal interfaces to the
 * router's own external addresses is routed out of the external interface
 * (a table of /32 or /128 routes, chosen by `iif` + protocol rules ahead of
 * the local table, which moves to `ipv4_local_rule_pref`), where the egress
 * program translates it both ways and turns it around to the internal host.
 *
 * Sharing, within this process and with other einats in the namespace (one per external
 * interface): routes go per external address; the `iif` rules are the same for every einat using
 * a table, so each adds them (one already there is fine) and the one that removes the table's
 * last route removes them. The local rule is moved once; each einat that finds it moved (at its
 * preference, `protocol kernel`) shares it, and the last to stop puts it back at 0 unless rules
 * that were not ahead of it before einat (another einat's hairpin rules, or ones added since)
 * still are.
 * @module
 */

import type { HairpinRoute, PortRange } from "./config/types.ts";
import { formatAddr } from "./config/cidr.ts";
import { ifNameToIndex } from "./ffi/libc.ts";
import { otherEinatsHere } from "./nat/attach.ts";
import { textKey } from "./key.ts";
import * as log from "./log.ts";
import { type Family, RT_TABLE, RTN } from "./netlink/msg.ts";
import { neighRequest } from "./netlink/neigh.ts";
import {
  addRoute,
  addRule,
  delRoute,
  delRule,
  dumpAddrs,
  dumpLinks,
  dumpRoutes,
  dumpRules,
  request,
  type RouteSpec,
  type RuleSpec,
} from "./netlink/rtnl.ts";

const PROTO = { tcp: 6, udp: 17, icmp: 1 } as Record<string, number>;
/** ICMPv6's protocol number: "icmp" in an IPv6 hairpin route means ICMPv6. */
const IPPROTO_ICMPV6 = 58;
/** `protocol kernel`: keeps systemd-networkd from removing the moved local rule. */
const RTPROT_KERNEL = 2;

/** What hairpin routing of one family holds, for release. */
export interface HairpinState {
  family: Family;
  rules: RuleSpec[];
  routes: RouteSpec[];
  /** The external addresses made resolvable on an Ethernet link (to its own MAC address). */
  neighs: { ifindex: number; dst: Uint8Array }[];
}

/** Rules and routes this process holds, by {@link textKey}: how many states hold each. */
const held = new Map<string, number>();
/**
 * Families whose local rule this process moved or shares: at which preference, and the rules
 * other than hairpin rules that sat ahead of it before einat moved it (by {@link ruleKey}).
 */
const movedLocal = new Map<Family, { pref: number; before: Set<string> }>();

/** The kernel's own tables (local, main, default): never a hairpin table. */
function kernelTable(table: number | undefined): boolean {
  return [RT_TABLE.LOCAL, RT_TABLE.MAIN, RT_TABLE.DEFAULT].includes(table as 253 | 254 | 255);
}

/** A rule as einat's hairpin routing adds them: an `iif`, a protocol, a table of its own. */
function hairpinLike(r: RuleSpec): boolean {
  return !!r.iifname && r.ipProto !== undefined && !kernelTable(r.table);
}

/** The rules ahead of preference `pref`, the local ones aside. */
function rulesAhead(rules: RuleSpec[], pref: number): RuleSpec[] {
  return rules.filter((r) => (r.priority ?? 0) < pref && r.table !== RT_TABLE.LOCAL);
}

function ruleKey(r: RuleSpec): string {
  return `${r.priority ?? 0} ${r.table} ${r.iifname ?? ""} ${r.ipProto ?? ""}`;
}

/** Why an add can fail harmlessly. */
function exists(e: unknown): boolean {
  return /exists/i.test((e as Error).message);
}

/** What {@link hold} counts: rules, routes and the neighbour entries of the destinations. */
type HeldSpec = RuleSpec | RouteSpec | { neigh: { ifindex: number; dst: Uint8Array } };

/**
 * Adds a rule or route, or takes another hold on one this process holds. One already there is
 * held all the same: a route to this interface's external address in einat's table is an
 * einat's (one killed, or replaced), a rule is shared by every einat using the table.
 */
async function hold(spec: HeldSpec, add: () => Promise<void>): Promise<void> {
  const key = textKey(spec);
  const n = held.get(key);
  if (n) {
    held.set(key, n + 1);
    return;
  }
  try {
    await add();
  } catch (e) {
    if (!exists(e)) throw e;
  }
  held.set(key, 1);
  if ("iifname" in spec) heldRules.add(hairpinRuleKey(spec as RuleSpec));
}

/** The hairpin rules this process holds, by {@link hairpinRuleKey}. */
const heldRules = new Set<string>();

/** Deletes hairpin rule `r` of `table` as the kernel listed it. */
function delHairpinRule(family: Family, r: RuleSpec, table: number): Promise<void> {
  return delRule({
    family,
    priority: r.priority,
    iifname: r.iifname,
    ipProto: r.ipProto,
    ...(r.dportRange ? { dportRange: r.dportRange } : {}),
    table,
  });
}

/** What tells one hairpin rule from another, as einat makes them and the kernel lists them. */
function hairpinRuleKey(r: RuleSpec): string {
  const d = r.dportRange;
  return `${r.family}/${r.priority ?? 0}/${r.iifname}/${r.ipProto}/${
    d ? `${d.start}-${d.end}` : ""
  }/${r.table ?? 0}`;
}

/**
 * Deletes the hairpin rules of `table` for the internal interfaces `iifs` that this process does
 * not hold, when every route of the table goes out of `ifindex` (so no einat of another
 * interface uses it): rules of an earlier configuration (other TCP ranges) or of an earlier
 * einat (any-port TCP rules), which a reload, a hand-over or a crash left. Returns how many.
 */
export async function dropStaleRules(
  family: Family,
  ifindex: number,
  table: number,
  iifs: string[],
): Promise<number> {
  if (kernelTable(table)) return 0;
  const routes = await dumpRoutes(family, table);
  if (routes.some((r) => r.oif !== ifindex)) return 0;
  let n = 0;
  for (const r of await dumpRules(family)) {
    if (!hairpinLike(r) || r.table !== table || !iifs.includes(r.iifname!)) continue;
    if (heldRules.has(hairpinRuleKey(r))) continue;
    await delHairpinRule(family, r, table).catch(() => {});
    n++;
  }
  return n;
}

/** Lets go of a hold: true for the last one of this process. */
function unhold(spec: HeldSpec): boolean {
  const key = textKey(spec);
  const n = held.get(key) ?? 0;
  if (n > 1) {
    held.set(key, n - 1);
    return false;
  }
  held.delete(key);
  if ("iifname" in spec) heldRules.delete(hairpinRuleKey(spec as RuleSpec));
  return true;
}

/**
 * Moves the local rule to `localPref` (added there first, so local delivery never stops). One
 * found there already with einat's `protocol kernel` (another einat's, a replaced or killed
 * one's) is shared: moved back at exit by the last einat to stop.
 */
async function moveLocalRule(family: Family, localPref: number): Promise<void> {
  const earlier = movedLocal.get(family);
  if (earlier?.pref === localPref) return;
  const rules = await dumpRules(family);
  const local = rules.filter((r) =>
    r.table === RT_TABLE.LOCAL && (r.action ?? 1) === 1 && !r.iifname
  );
  // What sat ahead before einat (kept across a move to another preference).
  const before = new Set([
    ...earlier?.before ?? [],
    ...rulesAhead(rules, localPref).filter((r) => !hairpinLike(r)).map(ruleKey),
  ]);
  if (local.length > 0 && local.every((r) => (r.priority ?? 0) === localPref)) {
    if (local.every((r) => r.protocol === RTPROT_KERNEL)) {
      movedLocal.set(family, { pref: localPref, before });
      log.info("the local routing rule is moved already (einat's): shared", {
        family: `IPv${family}`,
        pref: localPref,
      });
    }
    return;
  }
  try {
    await addRule({ family, priority: localPref, table: RT_TABLE.LOCAL, protocol: RTPROT_KERNEL });
  } catch (e) {
    if (!exists(e)) throw e;
  }
  let moved = false;
  for (const r of local) {
    // Those ahead of the new place, and the one einat moved before (a reload changed it).
    if ((r.priority ?? 0) < localPref || (r.priority ?? 0) === earlier?.pref) {
      await delRule({ family, priority: r.priority ?? 0, table: RT_TABLE.LOCAL });
      moved = true;
    }
  }
  if (moved) {
    movedLocal.set(family, { pref: localPref, before });
    log.info("moved the local routing rule", { family: `IPv${family}`, pref: localPref });
  }
}

/**
 * Installs hairpin routing for `dests` (external addresses) of one family on
 * the external interface `ifindex`. `tcpPorts`: the NAT's TCP ranges on them (merged), which the
 * TCP rules match, so that connections to the router's own TCP services (outside the ranges) are
 * never routed out and turned back: an ACK the kernel demultiplexed early to the router's socket
 * would be dropped on the forwarding path (the turned SYN was answered, the connection hung).
 * UDP and ICMP rules match any port: a datagram's later fragments carry none. Without
 * `tcpPorts`, any port.
 */
export async function hairpinUp(
  family: Family,
  ifindex: number,
  route: HairpinRoute,
  localPref: number,
  dests: Uint8Array[],
  ethernet = true,
  tcpPorts?: PortRange[],
): Promise<HairpinState> {
  const st: HairpinState = { family, rules: [], routes: [], neighs: [] };
  if (!route.enable || route.internalIfNames.length === 0 || dests.length === 0) return st;
  try {
    const link = (await dumpLinks()).find((l) => l.ifindex === ifindex);
    if (!link) throw new Error(`interface ${ifindex} is gone`);
    // On an Ethernet link each external address is made resolvable on it (to its own MAC
    // address), so the packets routed to it go out and reach TC egress; none is a gateway for
    // the others (IPv6 refuses a local address as one). An L3 device (`ethernet` false, as the
    // datapath tells it: TUN, PPP, WireGuard, IP tunnels) resolves none: the routes go
    // straight out of it.
    const lladdr = ethernet && link.address?.length ? link.address : null;
    for (const d of dests) {
      if (lladdr) {
        // Held like the routes: a reload's new instance adds it before the old one lets go.
        const n = { ifindex, dst: d };
        await hold(
          { neigh: n },
          () => request(neighRequest("new", { family, ifindex, dst: d, lladdr })),
        );
        st.neighs.push(n);
      }
      const r: RouteSpec = { family, dst: d, table: route.tableId, oif: ifindex };
      await hold(r, () => addRoute(r));
      st.routes.push(r);
    }
    await moveLocalRule(family, localPref);
    // The external interface itself as an internal one (named by index, or renamed since the
    // check at start): its rules would send the router's own inbound traffic to the hairpin table.
    const internals = route.internalIfNames.filter((n) => n !== link.ifname);
    if (internals.length < route.internalIfNames.length && !reportedSelf.has(link.ifname)) {
      reportedSelf.add(link.ifname);
      log.warn("hairpin: the external interface is listed as internal; no rules for it", {
        ifname: link.ifname,
      });
    }
    warnAbsent(internals);
    for (const iif of internals) {
      for (const p of route.ipProtocols) {
        const base: RuleSpec = {
          family,
          priority: route.ipRulePref,
          iifname: iif,
          ipProto: family === 6 && p === "icmp" ? IPPROTO_ICMPV6 : PROTO[p],
          table: route.tableId,
        };
        const ranges = p === "tcp" && tcpPorts ? tcpPorts : [undefined];
        for (const dportRange of ranges) {
          const r: RuleSpec = dportRange ? { ...base, dportRange } : base;
          await hold(r, () => addRule(r));
          st.rules.push(r);
        }
      }
    }
    log.info("hairpin routing installed", {
      family: `IPv${family}`,
      table: route.tableId,
      pref: route.ipRulePref,
      internal: internals.join(","),
      dests: dests.map(formatAddr).join(","),
    });
  } catch (e) {
    await hairpinDown(st);
    throw e;
  }
  return st;
}

/**
 * Adds again whatever of `st`'s routes is gone from its table, and then its neighbour entry (the
 * kernel drops both when the link is taken down). Returns how many routes were missing.
 */
export async function hairpinRepair(st: HairpinState): Promise<number> {
  if (st.routes.length === 0) return 0;
  const table = st.routes[0].table;
  const there = new Set(
    (await dumpRoutes(st.family, table)).map((r) => `${r.dst ? formatAddr(r.dst) : ""}/${r.oif}`),
  );
  const missing = st.routes.filter((r) => !there.has(`${formatAddr(r.dst!)}/${r.oif}`));
  if (missing.length === 0) return 0;
  const link = (await dumpLinks()).find((l) => l.ifindex === missing[0].oif);
  if (!link?.up) return 0; // down: the kernel takes no route through it; put back once up
  for (const n of link.address ? st.neighs : []) {
    await request(neighRequest("new", { family: st.family, ...n, lladdr: link.address! }))
      .catch((e) => {
        if (!exists(e)) throw e;
      });
  }
  for (const r of missing) {
    await addRoute(r).catch((e) => {
      if (!exists(e)) throw e;
    });
  }
  return missing.length;
}

/** Internal interfaces already reported absent (once per name while einat runs). */
const reportedAbsent = new Set<string>();

/**
 * Warns, once per name, of internal interfaces that do not exist: their rules are in place and
 * take effect if one appears, but a misspelt name would leave hairpinning off without a word.
 */
/** External interfaces reported as listed among their own internal ones. */
const reportedSelf = new Set<string>();

function warnAbsent(names: string[]): void {
  for (const name of names) {
    if (ifNameToIndex(name) !== 0) {
      reportedAbsent.delete(name);
    } else if (!reportedAbsent.has(name)) {
      reportedAbsent.add(name);
      log.warn("hairpin: no such internal interface (yet); its rules apply once it appears", {
        internal: name,
      });
    }
  }
}

/**
 * Lets go of what {@link hairpinUp} holds (the local rule stays moved): its routes, then the rules
 * no instance of this process holds, unless their table still has routes out of another
 * interface (another einat's, which may use the same rules). Routes out of this one are another
 * instance's of this process (a reload's), which holds its own rules: one it does not hold (other
 * TCP ranges) would only send traffic to the router's own services out and back.
 */
export async function hairpinDown(st: HairpinState): Promise<void> {
  const own = st.routes[0]?.oif;
  const quiet = async (what: string, f: () => Promise<void>) => {
    try {
      await f();
    } catch (e) {
      log.debug(`hairpin cleanup: ${what}`, { error: (e as Error).message });
    }
  };
  let routes = 0, rules = 0;
  const tables = new Set<number>();
  for (const r of st.routes.splice(0)) {
    if (!unhold(r)) continue;
    await quiet("route", () => delRoute(r));
    routes++;
    tables.add(r.table ?? 0);
  }
  const inUse = new Map<number, boolean>();
  for (const r of st.rules.splice(0)) {
    if (!unhold(r)) continue;
    const table = r.table ?? 0;
    if (!inUse.has(table)) {
      const left = await dumpRoutes(st.family, table).catch(() => []);
      inUse.set(table, left.some((x) => x.oif !== own));
    }
    if (inUse.get(table)) {
      log.debug("hairpin rule kept: its table has routes of another interface (another einat's)", {
        table,
      });
      continue;
    }
    await quiet("rule", () => delRule(r));
    rules++;
    tables.add(table);
  }
  if (routes + rules > 0) {
    log.info("hairpin routing removed", {
      family: `IPv${st.family}`,
      table: [...tables].join(","),
      routes,
      rules,
    });
  }
  for (const n of st.neighs.splice(0)) {
    if (unhold({ neigh: n })) {
      await quiet("neigh", () => request(neighRequest("del", { family: st.family, ...n })));
    }
  }
}

/**
 * Removes what hairpin routing of `family` on the external interface `ifindex` left behind when
 * an earlier einat went without removing it (SIGKILL, a crash, or `--replace` by an instance
 * without it), for an instance without hairpin routing of that family: in hairpin table `table`
 * (the configured one), the host routes out of `ifindex` to the router's own addresses, the
 * neighbour entries they used, then the hairpin rules (an `iif`, a protocol) pointing at the
 * table once it is empty. No other einat serves this interface (its lock), so such routes are no
 * one's. Routes to addresses the router no longer has (renumbered meanwhile) are not recognised.
 * The moved local rule stays where it is (rules added ahead of it since may rely on it): reported.
 * Returns how many routes went.
 */
export async function sweepHairpinLeftovers(
  family: Family,
  ifindex: number,
  table: number,
): Promise<number> {
  if (kernelTable(table)) return 0; // never einat's: the kernel's own routes live there
  const full = family === 4 ? 32 : 128;
  const own = new Set((await dumpAddrs(family)).map((a) => formatAddr(a.local ?? a.addr)));
  const left = (await dumpRoutes(family, table)).filter((r) =>
    r.routeType === RTN.UNICAST && r.oif === ifindex && r.dst && r.dstLen === full &&
    own.has(formatAddr(r.dst))
  );
  if (left.length === 0) {
    // The kernel dropped the routes with the link (taken down and up, or deleted and made again)
    // while no einat ran: the rules an earlier einat left lead to an empty table. Removed while
    // no route is in it and no other einat runs here: a live one's routes go with its link
    // while it is down too, and it puts back its routes, not its rules (hairpinRepair).
    if ((await dumpRoutes(family, table)).length > 0) return 0;
    if (heldRules.size > 0 || otherEinatsHere().length > 0) return 0;
    const rules = await dropTableRules(family, table);
    if (rules > 0) {
      log.warn("removed the hairpin rules an earlier einat left (their table is empty)", {
        family: `IPv${family}`,
        table,
        rules,
        ...(await localLeftAt(family)),
      });
    }
    return 0;
  }
  const neigh = new Map<string, Uint8Array>();
  for (const r of left) {
    await delRoute({ family, dst: r.dst, dstLen: full, table, oif: ifindex });
    const via = r.gateway ?? r.dst!;
    neigh.set(formatAddr(via), via);
  }
  for (const dst of neigh.values()) {
    // The router's own address made resolvable on its own link: only einat adds that.
    await request(neighRequest("del", { family, ifindex, dst })).catch(() => {});
  }
  const rules = await dropTableRules(family, table);
  log.warn("removed the hairpin routing an earlier einat left on this interface", {
    family: `IPv${family}`,
    table,
    routes: left.length,
    rules,
    ...(await localLeftAt(family)),
  });
  return left.length;
}

/** Removes the hairpin rules of `table` while no route is in it; returns how many. */
async function dropTableRules(family: Family, table: number): Promise<number> {
  let rules = 0;
  for (const r of (await dumpRules(family)).filter((r) => hairpinLike(r) && r.table === table)) {
    // Checked before each: another einat's hairpin routing may be adding routes meanwhile.
    if ((await dumpRoutes(family, table)).length > 0) break;
    await delHairpinRule(family, r, table);
    rules++;
  }
  return rules;
}

/** The moved local rule's preference, for the log, when no hairpin rule is left to need it. */
async function localLeftAt(family: Family): Promise<{ local_rule_left_at?: number }> {
  const after = await dumpRules(family);
  const local = after.find((r) =>
    r.table === RT_TABLE.LOCAL && r.priority !== 0 && r.protocol === RTPROT_KERNEL
  );
  return local && !after.some(hairpinLike) ? { local_rule_left_at: local.priority } : {};
}

/**
 * Puts the local rules this process moved back at preference 0, for a router without einat
 * (at exit, unless another einat took over). One stays moved while rules that were not ahead
 * of it when it moved are (another einat's hairpin rules): they rely on it.
 */
export async function restoreLocalRules(): Promise<void> {
  for (const [family, { pref, before }] of movedLocal) {
    movedLocal.delete(family);
    try {
      // Another einat's hairpin rules, or rules added since einat moved it, rely on it.
      const ahead = rulesAhead(await dumpRules(family), pref).filter((r) =>
        hairpinLike(r) || !before.has(ruleKey(r))
      );
      if (ahead.length > 0) {
        log.info("local routing rule left moved: other rules ahead of it rely on it", {
          family: `IPv${family}`,
          pref,
          rules: ahead.length,
        });
        continue;
      }
      await addRule({ family, priority: 0, table: RT_TABLE.LOCAL });
      await delRule({ family, priority: pref, table: RT_TABLE.LOCAL });
      log.info("moved the local routing rule back", { family: `IPv${family}`, pref: 0 });
    } catch (e) {
      log.warn("local routing rule not moved back", {
        family: `IPv${family}`,
        error: (e as Error).message,
      });
    }
  }
}
