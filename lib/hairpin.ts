/**
 * Hairpin routing (RFC 4787 REQ-9): traffic from internal interfaces to the
 * router's own external addresses is routed out of the external interface
 * (a table of /32 or /128 routes, chosen by `iif` + protocol rules ahead of
 * the local table, which moves to `ipv4_local_rule_pref`), where the egress
 * program translates it both ways and turns it around to the internal host.
 *
 * What this process adds is tracked process-wide with a count of the
 * hairpin states that hold it, so two external interfaces sharing a rule
 * (the same internal interface and table) keep it until the last lets go;
 * a rule or route that was there before einat is never taken over, nor
 * removed. The local rule, once moved, stays moved until
 * {@link restoreLocalRules} at exit.
 * @module
 */

import type { HairpinRoute } from "./config/types.ts";
import { formatAddr } from "./config/cidr.ts";
import * as log from "./log.ts";
import { type Family, RT_TABLE } from "./netlink/msg.ts";
import { neighRequest } from "./netlink/neigh.ts";
import {
  addRoute,
  addRule,
  delRoute,
  delRule,
  dumpLinks,
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
  neigh: { ifindex: number; dst: Uint8Array } | null;
}

/** Rules and routes this process added, by {@link specKey}: how many states hold each. */
const held = new Map<string, number>();
/**
 * Families whose local rule this process moved (or took over): to which preference, and the
 * rules that sat ahead of it then (by {@link ruleKey}).
 */
const movedLocal = new Map<Family, { pref: number; before: Set<string> }>();

/** The rules of `family` ahead of preference `pref`, the local ones aside, by {@link ruleKey}. */
async function rulesAhead(family: Family, pref: number): Promise<Set<string>> {
  return new Set(
    (await dumpRules(family))
      .filter((r) => (r.priority ?? 0) < pref && r.table !== RT_TABLE.LOCAL)
      .map(ruleKey),
  );
}

function ruleKey(r: RuleSpec): string {
  return `${r.priority ?? 0} ${r.table} ${r.iifname ?? ""} ${r.ipProto ?? ""}`;
}

function specKey(spec: RuleSpec | RouteSpec): string {
  return JSON.stringify(spec, (_k, v) => (v instanceof Uint8Array ? Array.from(v) : v));
}

/** Why an add can fail harmlessly. */
function exists(e: unknown): boolean {
  return /exists/i.test((e as Error).message);
}

/**
 * Adds a rule or route, or takes another hold on one this process added. False when it was
 * there already and is not ours: left alone, now and at removal; unless `adopt` (--replace:
 * the einat replaced added it and leaves it to this one).
 */
async function hold(
  spec: RuleSpec | RouteSpec,
  add: () => Promise<void>,
  adopt: boolean,
): Promise<boolean> {
  const key = specKey(spec);
  const n = held.get(key);
  if (n) {
    held.set(key, n + 1);
    return true;
  }
  try {
    await add();
  } catch (e) {
    if (!exists(e)) throw e;
    if (!adopt) {
      log.debug("hairpin: already there, not einat's; left alone", { spec: key });
      return false;
    }
  }
  held.set(key, 1);
  return true;
}

/** Lets go of a hold; the last one removes the rule or route. */
async function unhold(spec: RuleSpec | RouteSpec, del: () => Promise<void>): Promise<void> {
  const key = specKey(spec);
  const n = held.get(key) ?? 0;
  if (n > 1) {
    held.set(key, n - 1);
    return;
  }
  held.delete(key);
  await del();
}

/**
 * Moves the local rule to `localPref` (added there first, so local delivery never stops). One
 * already there is taken over, to be moved back at exit, when `adopt` (einat --replace: the
 * einat replaced moved it, with einat's protocol) and the rule says `protocol kernel`.
 */
async function moveLocalRule(family: Family, localPref: number, adopt: boolean): Promise<void> {
  const earlier = movedLocal.get(family);
  if (earlier?.pref === localPref) return;
  const rules = await dumpRules(family);
  const local = rules.filter((r) =>
    r.table === RT_TABLE.LOCAL && (r.action ?? 1) === 1 && !r.iifname
  );
  const before = await rulesAhead(family, localPref);
  if (local.length > 0 && local.every((r) => (r.priority ?? 0) === localPref)) {
    if (adopt && local.every((r) => r.protocol === RTPROT_KERNEL)) {
      movedLocal.set(family, { pref: localPref, before });
      log.info("took over the moved local routing rule", {
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
    // Moved again (a reload changed the preference): what sat ahead before einat still counts.
    movedLocal.set(family, {
      pref: localPref,
      before: new Set([...earlier?.before ?? [], ...before]),
    });
    log.info("moved the local routing rule", { family: `IPv${family}`, pref: localPref });
  }
}

/**
 * Installs hairpin routing for `dests` (external addresses) of one family on
 * the external interface `ifindex`. `adopt` (--replace): the rules, routes and moved local
 * rule found in place are the replaced einat's, taken over to remove at the end.
 */
export async function hairpinUp(
  family: Family,
  ifindex: number,
  route: HairpinRoute,
  localPref: number,
  dests: Uint8Array[],
  adopt = false,
): Promise<HairpinState> {
  const st: HairpinState = { family, rules: [], routes: [], neigh: null };
  if (!route.enable || route.internalIfNames.length === 0 || dests.length === 0) return st;
  try {
    const link = (await dumpLinks()).find((l) => l.ifindex === ifindex);
    if (!link?.address) throw new Error(`interface ${ifindex} has no link-layer address`);
    // The first external address is resolvable on the link: routes to the
    // others use it as gateway, and packets reach TC egress.
    const gw = dests[0];
    await request(neighRequest("new", { family, ifindex, dst: gw, lladdr: link.address }));
    st.neigh = { ifindex, dst: gw };
    for (const d of dests) {
      const r: RouteSpec = {
        family,
        dst: d,
        table: route.tableId,
        oif: ifindex,
        ...(d === gw ? {} : { gateway: gw }),
      };
      if (await hold(r, () => addRoute(r), adopt)) st.routes.push(r);
    }
    await moveLocalRule(family, localPref, adopt);
    for (const iif of route.internalIfNames) {
      for (const p of route.ipProtocols) {
        const r: RuleSpec = {
          family,
          priority: route.ipRulePref,
          iifname: iif,
          ipProto: family === 6 && p === "icmp" ? IPPROTO_ICMPV6 : PROTO[p],
          table: route.tableId,
        };
        if (await hold(r, () => addRule(r), adopt)) st.rules.push(r);
      }
    }
    log.info("hairpin routing installed", {
      family: `IPv${family}`,
      table: route.tableId,
      pref: route.ipRulePref,
      internal: route.internalIfNames.join(","),
      dests: dests.map(formatAddr).join(","),
    });
  } catch (e) {
    await hairpinDown(st);
    throw e;
  }
  return st;
}

/** Lets go of what {@link hairpinUp} holds (the local rule stays moved). */
export async function hairpinDown(st: HairpinState): Promise<void> {
  const quiet = async (what: string, f: () => Promise<void>) => {
    try {
      await f();
    } catch (e) {
      log.debug(`hairpin cleanup: ${what}`, { error: (e as Error).message });
    }
  };
  for (const r of st.rules.splice(0)) await quiet("rule", () => unhold(r, () => delRule(r)));
  for (const r of st.routes.splice(0)) await quiet("route", () => unhold(r, () => delRoute(r)));
  if (st.neigh) {
    const n = st.neigh;
    await quiet("neigh", () => request(neighRequest("del", { family: st.family, ...n })));
    st.neigh = null;
  }
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
      const ahead = [...await rulesAhead(family, pref)].filter((k) => !before.has(k));
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
